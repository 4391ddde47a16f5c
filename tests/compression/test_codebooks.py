import itertools

import pytest
import torch

from compression.codebooks import (
    codebook_levels,
    dequantize,
    least_squares_alpha,
    nearest_codes,
    project,
    quantization_error,
)
from model_store.ir import Codebook

LOW_BIT = [Codebook.BINARY, Codebook.TERNARY, Codebook.POW2_2, Codebook.POW2_4]


def all_assignments(codebook: Codebook, count: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(codebook_levels(codebook).tolist(), repeat=count)))


def brute_force_error(weight: torch.Tensor, codebook: Codebook) -> torch.Tensor:
    """min over every code assignment and alpha >= 0 of ||w - alpha q||^2, per row of a (O, N) weight."""
    codes = all_assignments(codebook, weight.shape[1])
    inner, energy = weight @ codes.T, (codes * codes).sum(dim=1)
    alpha = (inner / energy.clamp(min=1e-12)).clamp(min=0)
    errors = (weight * weight).sum(dim=1, keepdim=True) - 2 * alpha * inner + alpha**2 * energy
    return errors.min(dim=1).values


@pytest.mark.parametrize("codebook", LOW_BIT)
def test_projection_matches_brute_force_over_all_assignments(codebook):
    torch.manual_seed(0)
    weight = torch.randn(64, 5) * torch.rand(64, 1) * 3

    codes, alpha = project(weight, codebook)

    assert set(codes.unique().tolist()) <= set(codebook_levels(codebook).tolist())
    # The brute force's expanded form ||w||^2 - 2 alpha <w,q> + alpha^2 ||q||^2 cancels digits: compare loosely.
    torch.testing.assert_close(
        quantization_error(weight, codes, alpha), brute_force_error(weight, codebook), rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("codebook", LOW_BIT)
def test_projection_beats_every_alpha_of_a_fine_grid(codebook):
    torch.manual_seed(1)
    weight = torch.randn(16, 40)
    codes, alpha = project(weight, codebook)
    error = quantization_error(weight, codes, alpha)

    for scale in torch.linspace(0.01, 3.0, 120):
        grid_alpha = torch.full((16,), float(scale))
        grid_error = quantization_error(weight, nearest_codes(weight, codebook, grid_alpha), grid_alpha)
        assert (error <= grid_error + 1e-5).all()


@pytest.mark.parametrize("codebook", LOW_BIT)
def test_nearest_codes_are_the_best_assignment_for_a_fixed_alpha(codebook):
    torch.manual_seed(2)
    weight = torch.randn(8, 4)
    alpha = torch.rand(8) + 0.2
    candidates = all_assignments(codebook, 4)
    errors = ((weight[:, None, :] - alpha[:, None, None] * candidates[None]) ** 2).sum(dim=2)

    codes = nearest_codes(weight, codebook, alpha)

    torch.testing.assert_close(quantization_error(weight, codes, alpha), errors.min(dim=1).values)


def test_least_squares_alpha_is_the_closed_form_and_minimizes_the_error():
    torch.manual_seed(3)
    weight = torch.randn(6, 3, 3, 3)
    codes = nearest_codes(weight, Codebook.POW2_4, torch.full((6,), 0.5))

    alpha = least_squares_alpha(weight, codes)

    flat_w, flat_q = weight.reshape(6, -1), codes.float().reshape(6, -1)
    torch.testing.assert_close(alpha, (flat_w * flat_q).sum(1) / (flat_q * flat_q).sum(1))
    for nudge in (0.99, 1.01):
        assert (quantization_error(weight, codes, alpha) < quantization_error(weight, codes, alpha * nudge)).all()


def test_binary_projection_is_the_sign_times_the_mean_magnitude():
    weight = torch.tensor([[0.5, -1.5, 0.0, 2.0]])

    codes, alpha = project(weight, Codebook.BINARY)

    assert codes.tolist() == [[1, -1, 1, 1]]
    torch.testing.assert_close(alpha, torch.tensor([1.0]))


def test_int8_is_symmetric_max_scaling_with_rounding():
    torch.manual_seed(4)
    weight = torch.randn(5, 3, 3, 3)

    codes, alpha = project(weight, Codebook.INT8)

    flat = weight.reshape(5, -1)
    torch.testing.assert_close(alpha, flat.abs().amax(dim=1) / 127)
    assert codes.dtype == torch.int8
    assert codes.reshape(5, -1).abs().amax(dim=1).tolist() == [127] * 5
    assert torch.equal(codes, (weight / alpha[:, None, None, None]).round().to(torch.int8))
    assert (dequantize(codes, alpha) - weight).abs().max() <= alpha.max() / 2 + 1e-6


@pytest.mark.parametrize("codebook", [Codebook.TERNARY, Codebook.POW2_2, Codebook.POW2_4, Codebook.INT8])
def test_masked_weights_get_code_zero_and_do_not_move_alpha(codebook):
    torch.manual_seed(5)
    weight = torch.randn(4, 2, 3, 3)
    mask = torch.rand(4, 2, 3, 3) > 0.5
    mask[:, 0, 0, 0] = True
    weight[~mask] = 100.0  # pruned weights that would dominate alpha if they counted

    codes, alpha = project(weight, codebook, mask)
    kept_codes, kept_alpha = project(weight * mask, codebook, mask)

    assert (codes[~mask] == 0).all()
    assert torch.equal(codes, kept_codes)
    torch.testing.assert_close(alpha, kept_alpha)
    assert alpha.max() < 10


def test_a_channel_without_nonzero_codes_gets_the_layers_median_alpha():
    weight = torch.tensor([[1.0, -1.0], [0.0, 0.0], [2.0, 2.0], [4.0, 4.0]])

    codes, alpha = project(weight, Codebook.TERNARY)

    assert codes[1].tolist() == [0, 0]
    torch.testing.assert_close(alpha, torch.tensor([1.0, 2.0, 2.0, 4.0]))


def test_projection_keeps_the_weight_shape_and_is_exact_on_codebook_points():
    codes = torch.tensor([[-4, 2, 0, 1], [1, -1, 4, 0]], dtype=torch.int8).reshape(2, 1, 2, 2)
    alpha = torch.tensor([0.25, 3.0])

    projected_codes, projected_alpha = project(dequantize(codes, alpha), Codebook.POW2_4)

    assert torch.equal(projected_codes, codes)
    torch.testing.assert_close(projected_alpha, alpha)


def test_binary_rejects_a_mask_and_a_mask_must_match_the_weight():
    weight = torch.randn(2, 3)
    with pytest.raises(ValueError, match="binary codebook has no zero"):
        project(weight, Codebook.BINARY, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask shape"):
        project(weight, Codebook.TERNARY, torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="output-channel axis"):
        project(torch.randn(3), Codebook.TERNARY)
    with pytest.raises(ValueError, match="is not a valid Codebook"):
        project(weight, "int4")
