"""Mixed precision by sensitivity: which layers a low-bit codebook hurts most, measured on the loss.

Each candidate layer is projected onto its codebook alone, every other layer left in float, and the loss
rises by some amount on the same few batches: that rise is the layer's sensitivity (the first-order
measure of HAWQ-style mixed-precision tools, taken directly instead of through the Hessian). The most
sensitive layers then take a wider codebook as long as their weights fit a budget, a small fraction of
the model's. On the smart-park detector ternary costs the stride-16 stage nothing and the layers next to
the first and last ones (the stride-4 stage, the heads' hidden convolutions) most: a ternary model with
those layers (under 5 % of its weights) on {0, +-1, +-2, +-4} loses about half of pure ternary's mAP at
3 % more bytes (docs/benchmarks.md, seventh round).
"""

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from compression.codebooks import dequantize, project
from compression.progress import LossFunction, Progress, ProgressCallback, check_loss
from model_store.ir import Codebook


@contextmanager
def projected_alone(module: nn.Module, codebook: Codebook, mask: Tensor | None = None):
    """Within the block the layer computes with its weight projected onto `codebook` (respecting `mask`);
    afterwards, even after an error, it has its own weight back. The weight must be a plain parameter."""
    weight = module.weight.data
    original = weight.clone()
    codes, alpha = project(original, codebook, mask)
    weight.copy_(dequantize(codes, alpha).to(weight.dtype))
    try:
        yield
    finally:
        weight.copy_(original)


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    layers: dict[str, tuple[nn.Module, Codebook, Tensor | None]],
    batches: Iterator,
    loss_fn: LossFunction,
    num_batches: int,
    progress: ProgressCallback | None = None,
) -> dict[str, float]:
    """Per layer name: the mean loss over `num_batches` batches with that layer alone projected onto its
    codebook (respecting its pruning mask, if any), minus the mean loss of the unchanged model on the same
    batches. Each layer's weight must be a plain parameter (pruning masks squashed).

    The model is evaluated in eval mode (batch norm keeps its statistics, so a projection that changes a
    channel's scale shows) and comes back unchanged, weights and mode.
    """
    if num_batches < 1:
        raise ValueError(f"sensitivity needs at least one batch, got {num_batches}")
    sample = list(itertools.islice(batches, num_batches))
    was_training = model.training
    model.eval()

    def mean_loss() -> float:
        total = 0.0
        for step, batch in enumerate(sample):
            loss = loss_fn(model, batch)
            check_loss(loss, step)
            total += loss.item()
        return total / len(sample)

    try:
        reference = mean_loss()
        sensitivity = {}
        for done, (name, (module, codebook, mask)) in enumerate(layers.items(), start=1):
            with projected_alone(module, codebook, mask):
                sensitivity[name] = mean_loss() - reference
            if progress is not None:
                progress(Progress("sensitivity", done, len(layers), reference + sensitivity[name]))
        return sensitivity
    finally:
        model.train(was_training)


def most_sensitive(sensitivity: dict[str, float], sizes: dict[str, int], budget: int) -> list[str]:
    """The layers to give the wider codebook: most sensitive first, each one whose weights still fit in
    `budget` (a layer too large is passed over for smaller, less sensitive ones); a layer whose projection
    did not raise the loss is never chosen."""
    chosen, used = [], 0
    for name in sorted(sensitivity, key=sensitivity.get, reverse=True):
        if sensitivity[name] <= 0:
            break
        if used + sizes[name] <= budget:
            chosen.append(name)
            used += sizes[name]
    return chosen
