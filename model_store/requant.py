"""The golden integer requantization ops: real scales as multiplier / 2**shift, and the rounding right shift.

Every runtime (numpy reference, FPGA, lowering) derives its multipliers here, so they agree bit for bit.
"""

from fractions import Fraction

import numpy as np

MULTIPLIER_BITS = 31
MAX_SHIFT = 62
# The representable reals: multiplier in [2**30, 2**31) over a shift in [0, 62]; from 2**31 - 1/2 up the
# multiplier would round to 2**31 at shift 0.
MIN_REAL = 2.0**-32
MAX_REAL = 2.0**31 - 0.5


def rounding_right_shift(values: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """values / 2**shift rounded to the nearest integer, ties away from zero, as int64.

    `shift` (0..62) broadcasts against `values`, so a per-output-channel shift of shape (O, 1, ...) applies row by
    row; shift 0 returns the values unchanged. Exact for |values| < 2**62 (the conv product acc * multiplier stays
    below 2**31 * 2**31): the magnitude plus half the divisor then fits int64.
    """
    values = np.asarray(values, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    if np.any(shift < 0) or np.any(shift > MAX_SHIFT):
        raise ValueError(f"a rounding right shift lies in [0, {MAX_SHIFT}], got {shift.min()}..{shift.max()}")
    half = (np.int64(1) << shift) >> 1
    magnitude = (np.abs(values) + half) >> shift
    return np.where(values < 0, -magnitude, magnitude)


def quantize_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """A positive real scale as (multiplier, shift) int32 arrays of its shape, with real ~= multiplier / 2**shift.

    shift is the largest integer for which multiplier = round_half_away(real * 2**shift) stays below 2**31; so
    the multiplier lies in [2**30, 2**31) and the relative error is at most 2**-31. The computation is exact:
    real = mantissa * 2**exponent with a 53-bit integer mantissa, rounded by `rounding_right_shift`. Reals
    outside [2**-32, 2**31 - 1/2) need a shift outside 0..62 and are refused, like non-positive or non-finite ones.
    """
    real = np.asarray(real, dtype=np.float64)
    usable = np.isfinite(real) & (real > 0)
    if not np.all(usable):
        raise ValueError(f"a requantization scale must be positive and finite, got {real[~usable][:4]}")
    if np.any(real < MIN_REAL) or np.any(real >= MAX_REAL):
        raise ValueError(
            "a requantization scale must lie in [2**-32, 2**31 - 1/2) to fit a 31-bit multiplier and a shift "
            f"of 0..62, got {real.min()}..{real.max()}"
        )
    fraction, exponent = np.frexp(real)  # real = fraction * 2**exponent, fraction in [0.5, 1)
    mantissa = np.ldexp(fraction, 53).astype(np.int64)  # exact: a float64 carries 53 significant bits
    multiplier = rounding_right_shift(mantissa, 53 - MULTIPLIER_BITS)
    shift = MULTIPLIER_BITS - exponent.astype(np.int64)
    carried = multiplier == 1 << MULTIPLIER_BITS  # rounded up to 2**31: one bit less of shift
    multiplier = np.where(carried, multiplier >> 1, multiplier)
    shift = np.where(carried, shift - 1, shift)
    return multiplier.astype(np.int32), shift.astype(np.int32)


def multiplier_at_shift(real: float, shift: int) -> int:
    """round_half_away(real * 2**shift) for a positive real, exactly (rational arithmetic).

    The partner of a multiplier that shares another one's shift, as the inputs of an Add do.
    """
    if not (np.isfinite(real) and real > 0):
        raise ValueError(f"a requantization scale must be positive and finite, got {real}")
    scaled = Fraction(float(real)) * 2**shift
    quotient, remainder = divmod(scaled.numerator, scaled.denominator)
    return quotient + (2 * remainder >= scaled.denominator)
