"""Projection of a weight tensor onto a codebook times a scale per output channel: W ~ alpha[o] * codes[o].

This is the G-step of ADMM quantization and the whole of data-free quantization. Output channels lie
along dim 0 (Conv2d (O, I, kH, kW), Linear (O, I)); every function is vectorized over them.
"""

import torch
from torch import Tensor

from model_store.ir import Codebook

INT8_MAX_CODE = 127


def codebook_levels(codebook: Codebook) -> Tensor:
    """The codes of a codebook as a sorted float32 tensor."""
    return torch.from_numpy(codebook.levels.astype("float32"))


def nearest_codes(weight: Tensor, codebook: Codebook, alpha: Tensor, mask: Tensor | None = None) -> Tensor:
    """The code nearest to weight / alpha[o] for every weight: the best codes for a fixed alpha. int8 codes.

    Masked-out weights (mask False) get code 0.
    """
    codebook = Codebook(codebook)
    _check_mask(weight, codebook, mask)
    scaled = weight.detach().float() / _per_channel(alpha.float(), weight)
    if codebook is Codebook.INT8:
        codes = scaled.round().clamp(-INT8_MAX_CODE, INT8_MAX_CODE)
    else:
        magnitudes = _magnitudes(codebook, scaled.device)
        thresholds = (magnitudes[1:] + magnitudes[:-1]) / 2
        level = torch.bucketize(scaled.abs().contiguous(), thresholds)
        # sign(0) would be 0, which binary lacks: a zero weight takes +1 there (either sign errs alike).
        sign = torch.where(scaled < 0, -1.0, 1.0)
        codes = sign * magnitudes[level]
    if mask is not None:
        codes = codes * mask
    return codes.to(torch.int8)


def least_squares_alpha(weight: Tensor, codes: Tensor) -> Tensor:
    """alpha[o] = <w_o, q_o> / <q_o, q_o>, the best scale for fixed codes, (O,).

    A channel whose codes are all zero is represented by any alpha; it gets the median of the others so
    that requantization multipliers derived from alpha stay in the layer's range (1 if no channel has one).
    """
    flat_weight = weight.detach().float().reshape(weight.shape[0], -1)
    flat_codes = codes.float().reshape(codes.shape[0], -1)
    energy = (flat_codes * flat_codes).sum(dim=1)
    alpha = (flat_weight * flat_codes).sum(dim=1) / energy.clamp(min=1.0)
    return _fill_unused_channels(alpha, energy > 0)


def project(weight: Tensor, codebook: Codebook, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The nearest point of {alpha[o] * codes[o]} to `weight`: (codes int8 same shape, alpha float32 (O,)).

    For int8, alpha = max|w| / 127 per channel (symmetric) and codes = round(w / alpha). For the low-bit
    codebooks the projection is exact, not a local optimum of alternating codes and alpha: for a fixed
    alpha the codes are nearest levels, so as alpha falls from infinity each weight's code steps up one
    level at a breakpoint 2|w| / (m_i + m_i+1) (m: the code magnitudes). Sorting all breakpoints walks
    every code assignment that is optimal for some alpha; the running sums S1 = sum |w| |q| and
    S2 = sum q^2 give each one's error ||w||^2 - S1^2 / S2 at its own best alpha = S1 / S2, and the best of
    them is the global optimum. Masked-out weights (mask False) get code 0 and do not influence alpha.
    alpha is positive, except 0 for a binary channel whose weights are all zero (binary has no zero code).
    """
    codebook = Codebook(codebook)
    _check_mask(weight, codebook, mask)
    if weight.ndim < 2:
        raise ValueError(f"a weight to quantize has an output-channel axis and more, got shape {tuple(weight.shape)}")
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    flat_mask = None if mask is None else mask.reshape(weight.shape[0], -1).bool()
    if flat_mask is not None:
        flat = flat * flat_mask
    if codebook is Codebook.INT8:
        largest = flat.abs().amax(dim=1)
        alpha = _fill_unused_channels(largest / INT8_MAX_CODE, largest > 0)
    else:
        alpha = _optimal_alpha(flat.abs(), codebook, flat_mask)
    codes = nearest_codes(flat, codebook, alpha, flat_mask)
    if codebook is not Codebook.INT8:
        # The codes nearest at the optimal alpha are at least as good as the breakpoint walk's; refitting
        # alpha to them can only lower the error further, and makes alpha exact for the codes returned.
        alpha = least_squares_alpha(flat, codes)
    return codes.reshape(weight.shape), alpha


def dequantize(codes: Tensor, alpha: Tensor) -> Tensor:
    """alpha[o] * codes[o] as float32, the weight a quantized layer computes with."""
    return _per_channel(alpha.float(), codes) * codes.float()


def quantization_error(weight: Tensor, codes: Tensor, alpha: Tensor) -> Tensor:
    """Squared error ||w_o - alpha[o] q_o||^2 per output channel, (O,)."""
    difference = (weight.detach().float() - dequantize(codes, alpha)).reshape(weight.shape[0], -1)
    return (difference * difference).sum(dim=1)


def _optimal_alpha(magnitude: Tensor, codebook: Codebook, mask: Tensor | None) -> Tensor:
    magnitudes = _magnitudes(codebook, magnitude.device)
    lower, upper = magnitudes[:-1], magnitudes[1:]
    # Before any breakpoint (alpha -> infinity) every code has the smallest magnitude: 0, or 1 for binary.
    s1 = magnitudes[0] * magnitude.sum(dim=1)
    weights = magnitude.new_full((len(magnitude),), magnitude.shape[1]) if mask is None else mask.sum(dim=1)
    s2 = magnitudes[0] ** 2 * weights
    best_s1, best_s2 = s1, s2
    if len(lower):
        # Crossing breakpoint t = 2|w| / (m_i + m_i+1) adds d_i = m_i+1^2 - m_i^2 to S2 and |w| (m_i+1 - m_i)
        # = t d_i / 2 to S1. Masked weights get t = -1: they sort last and their steps are dropped.
        breakpoints = (2 * magnitude[:, :, None] / (lower + upper)).flatten(1)
        if mask is not None:
            breakpoints = torch.where(mask.repeat_interleave(len(lower), dim=1), breakpoints, -1.0)
        ordered, order = breakpoints.sort(dim=1, descending=True)
        s2_steps = (upper**2 - lower**2)[order % len(lower)] * (ordered >= 0)
        s1_walk = s1[:, None] + (ordered * s2_steps / 2).cumsum(dim=1)
        s2_walk = s2[:, None] + s2_steps.cumsum(dim=1)
        best = _explained(s1_walk, s2_walk).argmax(dim=1, keepdim=True)
        walk_s1, walk_s2 = s1_walk.gather(1, best)[:, 0], s2_walk.gather(1, best)[:, 0]
        walk_is_better = _explained(walk_s1, walk_s2) > _explained(s1, s2)
        best_s1 = torch.where(walk_is_better, walk_s1, s1)
        best_s2 = torch.where(walk_is_better, walk_s2, s2)
    alpha = best_s1 / best_s2.clamp(min=1e-30)
    return _fill_unused_channels(alpha, alpha > 0)


def _explained(s1: Tensor, s2: Tensor) -> Tensor:
    """S1^2 / S2: how much of ||w||^2 an assignment removes at its best alpha (0 for the all-zero one)."""
    return torch.where(s2 > 0, s1 * s1 / s2.clamp(min=1e-30), torch.zeros_like(s1))


def _magnitudes(codebook: Codebook, device: torch.device) -> Tensor:
    """The distinct code magnitudes, on the device of the weights they are compared with (ADMM runs on a GPU too)."""
    return codebook_levels(codebook).abs().unique().to(device)


def _fill_unused_channels(alpha: Tensor, used: Tensor) -> Tensor:
    fallback = alpha[used].median() if used.any() else alpha.new_tensor(1.0)
    return torch.where(used, alpha, fallback).float()


def _per_channel(alpha: Tensor, like: Tensor) -> Tensor:
    return alpha.reshape(-1, *([1] * (like.ndim - 1)))


def _check_mask(weight: Tensor, codebook: Codebook, mask: Tensor | None) -> None:
    if mask is None:
        return
    if codebook is Codebook.BINARY:
        raise ValueError("the binary codebook has no zero code, so it cannot keep pruned weights: use ternary or wider")
    if mask.shape != weight.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from weight shape {tuple(weight.shape)}")
