from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_store.requant import multiplier_at_shift, quantize_multiplier, rounding_right_shift


def round_half_away(value: Fraction) -> int:
    magnitude = abs(value)
    rounded = magnitude.numerator * 2 + magnitude.denominator
    rounded //= 2 * magnitude.denominator  # floor(|value| + 1/2)
    return rounded if value >= 0 else -rounded


representable_reals = st.floats(min_value=2.0**-32, max_value=2.0**31 - 0.5, exclude_max=True)


@settings(max_examples=300, deadline=None)
@given(real=representable_reals)
def test_quantize_multiplier_is_the_exact_rounding_at_the_largest_shift(real):
    multiplier, shift = quantize_multiplier(real)
    multiplier, shift = int(multiplier), int(shift)
    assert 2**30 <= multiplier < 2**31
    assert 0 <= shift <= 62
    assert multiplier == round_half_away(Fraction(real) * 2**shift)
    # One more bit of shift would not fit 31 bits: the shift is the largest possible.
    assert round_half_away(Fraction(real) * 2 ** (shift + 1)) >= 2**31
    relative_error = abs(Fraction(multiplier, 2**shift) - Fraction(real)) / Fraction(real)
    assert relative_error < Fraction(1, 2**30)


def test_quantize_multiplier_per_channel_matches_scalars_and_keeps_shape():
    reals = np.array([[1.0, 0.5, 3.0e-3], [2.0**-32, 7.5, 2.0**31 - 0.75]])
    multipliers, shifts = quantize_multiplier(reals)
    assert multipliers.shape == shifts.shape == reals.shape
    assert multipliers.dtype == shifts.dtype == np.int32
    for index, real in np.ndenumerate(reals):
        assert (multipliers[index], shifts[index]) == tuple(int(v) for v in quantize_multiplier(real))
    assert (multipliers[0, 0], shifts[0, 0]) == (2**30, 30)  # 1.0 is exact: an identity requantization


def test_quantize_multiplier_carries_a_rounding_up_to_two_to_the_31():
    just_below_one = np.nextafter(1.0, 0.0)  # mantissa * 2**31 rounds up to 2**31
    multiplier, shift = quantize_multiplier(just_below_one)
    assert (int(multiplier), int(shift)) == (2**30, 30)


@pytest.mark.parametrize("real", [0.0, -1.0, float("nan"), float("inf"), 2.0**-33, 2.0**31 - 0.5, 1e300])
def test_quantize_multiplier_refuses_unrepresentable_scales(real):
    with pytest.raises(ValueError, match="requantization scale"):
        quantize_multiplier(real)


def test_rounding_right_shift_rounds_ties_away_from_zero_for_both_signs():
    values = np.array([5, -5, 3, -3, 1, -1, 4, -4, 6, -6, 7, -7])
    assert rounding_right_shift(values, 1).tolist() == [3, -3, 2, -2, 1, -1, 2, -2, 3, -3, 4, -4]
    assert rounding_right_shift(np.array([6, -6, 5, -5, 2, -2]), 2).tolist() == [2, -2, 1, -1, 1, -1]


def test_rounding_right_shift_by_zero_is_the_identity():
    values = np.array([0, 1, -1, 2**61, -(2**61)], dtype=np.int64)
    assert np.array_equal(rounding_right_shift(values, 0), values)


@settings(max_examples=300, deadline=None)
@given(
    value=st.integers(min_value=-(2**62) + 1, max_value=2**62 - 1),
    shift=st.integers(min_value=0, max_value=62),
)
def test_rounding_right_shift_equals_rational_rounding(value, shift):
    assert int(rounding_right_shift(np.array([value]), shift)[0]) == round_half_away(Fraction(value, 2**shift))


def test_rounding_right_shift_broadcasts_a_per_channel_shift():
    values = np.array([[10, -10, 11], [10, -10, 11]])
    shifts = np.array([[1], [2]])
    assert rounding_right_shift(values, shifts).tolist() == [[5, -5, 6], [3, -3, 3]]


@pytest.mark.parametrize("shift", [-1, 63])
def test_rounding_right_shift_refuses_shifts_outside_0_to_62(shift):
    with pytest.raises(ValueError, match="shift"):
        rounding_right_shift(np.array([1]), shift)


@settings(max_examples=200, deadline=None)
@given(real=st.floats(min_value=1e-12, max_value=1e6), shift=st.integers(min_value=0, max_value=62))
def test_multiplier_at_shift_is_the_exact_rounding(real, shift):
    assert multiplier_at_shift(real, shift) == round_half_away(Fraction(real) * 2**shift)


@pytest.mark.parametrize("real", [0.0, -2.0, float("nan")])
def test_multiplier_at_shift_refuses_non_positive_scales(real):
    with pytest.raises(ValueError, match="positive"):
        multiplier_at_shift(real, 3)
