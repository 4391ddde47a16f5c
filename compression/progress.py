"""The progress record that long compression runs report to their caller (a Celery task's state, a log line)."""

from collections.abc import Callable
from dataclasses import dataclass


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
