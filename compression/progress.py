"""What the long compression runs share: the progress they report and the endless batch stream they train on."""

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass(frozen=True)
class Progress:
    """Where a run stands: `step` of `total` in `phase`, with the latest task loss and constraint residual.

    `loss` is None where no data is involved (data-free projection); `residual` is None where there is
    no constraint (pruning's fine-tuning), else the mean over layers of ||W - G|| / ||W||.
    """

    phase: str
    step: int
    total: int
    loss: float | None = None
    residual: float | None = None


ProgressCallback = Callable[[Progress], None]
LossFunction = Callable[[nn.Module, Any], Tensor]


def check_training_inputs(data: Iterable | None, loss_fn: LossFunction | None) -> bool:
    """Whether a run trains: data and loss_fn come together or not at all."""
    if (data is None) != (loss_fn is None):
        raise ValueError("pass both data and loss_fn to train, or neither for the data-free mode")
    return data is not None


def cycle_batches(data: Iterable) -> Iterator:
    """The batches of a re-iterable (a DataLoader, a list) over and over, for runs longer than one pass."""
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training data yielded no batch")


def check_loss(loss: Tensor, step: int) -> None:
    """A loss_fn result must be a finite scalar; a diverging run stops with what to change."""
    if loss.ndim != 0:
        raise ValueError(f"loss_fn must return a scalar tensor, got shape {tuple(loss.shape)}")
    if not math.isfinite(loss.item()):
        raise ValueError(f"the loss became {loss.item()} at step {step}: lower the learning rate")
