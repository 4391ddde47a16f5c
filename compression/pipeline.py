"""`compress()`: prune, quantize, calibrate and lower a float model to the integer IR, with a report.

Two modes. Data-dependent: the user's batches drive pruning importance, ADMM and fine-tuning, and
calibration batches set the activation scales. Data-free: no batch at all, weights are projected onto
their codebooks and activation ranges come from the batch-norm statistics. Progress callbacks report
every phase, so the platform's job page can show a bar and a loss curve.
"""

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from compression.admm import AdmmQuantConfig, quantize_
from compression.calibration import DEFAULT_PERCENTILE, calibrate, data_free_ranges
from compression.distillation import frozen_teacher, with_distillation
from compression.lowering import lower
from compression.progress import LossFunction, Progress, ProgressCallback
from compression.pruning import PruneConfig, prune_
from compression.report import CompressionReport, build_report
from model_store import ir

# What a caller may measure before and after (accuracy, mAP): a float model or the integer IR in, a number out.
Metric = Callable[[nn.Module | ir.Model], float]


@dataclass
class CompressConfig:
    """One compression job: pruning (optional), quantization, calibration and the IR's input shape.

    `input_shape` is (N, C, H, W) of the network input; `input_range` the real range of that input in
    data-free mode (the detector sees pixels / 255, so (0, 1)).
    """

    quantization: AdmmQuantConfig = field(default_factory=AdmmQuantConfig)
    pruning: PruneConfig | None = None
    data_free: bool = False
    input_shape: tuple[int, int, int, int] = (1, 3, 240, 320)
    input_range: tuple[float, float] = (0.0, 1.0)
    calibration_percentile: float = DEFAULT_PERCENTILE
    # > 0: pruning, ADMM and fine-tuning also match the float model's outputs (compression.distillation).
    distillation_weight: float = 0.0
    # > 0: they also match the float model's activations at these module names (relative error per layer).
    feature_distillation_weight: float = 0.0
    feature_distillation_layers: tuple[str, ...] = ()
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.quantization, AdmmQuantConfig):
            raise ValueError(f"quantization is an AdmmQuantConfig, got {type(self.quantization).__name__}")
        if self.pruning is not None and not isinstance(self.pruning, PruneConfig):
            raise ValueError(f"pruning is a PruneConfig or None, got {type(self.pruning).__name__}")
        self.input_shape = tuple(int(n) for n in self.input_shape)
        if len(self.input_shape) != 4 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape is (N, C, H, W) of positive sizes, got {self.input_shape}")
        low, high = self.input_range
        if not low < high:
            raise ValueError(f"input_range is (low, high) with low < high, got {self.input_range}")
        for name in ("distillation_weight", "feature_distillation_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} is zero (off) or positive, got {value}")
        if isinstance(self.feature_distillation_layers, str):
            raise ValueError(
                f"feature_distillation_layers is a tuple of module names, got {self.feature_distillation_layers!r}"
            )
        self.feature_distillation_layers = tuple(self.feature_distillation_layers)
        if self.feature_distillation_weight > 0 and not self.feature_distillation_layers:
            raise ValueError("feature_distillation_weight > 0 needs feature_distillation_layers (module names)")


@dataclass
class CompressionResult:
    """The compressed float model (codes frozen, batch norm unfolded), its integer IR and the report."""

    model: nn.Module
    integer_model: ir.Model
    report: CompressionReport


def compress(
    model: nn.Module,
    config: CompressConfig,
    *,
    data: Iterable | None = None,
    loss_fn: LossFunction | None = None,
    calibration: Sequence[torch.Tensor] = (),
    metric: Metric | None = None,
    progress: ProgressCallback | None = None,
) -> CompressionResult:
    """Compress a copy of `model` (the original is untouched).

    `data` and `loss_fn` go to pruning and ADMM; without them weights are only projected (and pruned by
    magnitude). `calibration` is a few input batches for the activation ranges. With `config.data_free`
    all three are ignored: projection, magnitude pruning and ranges from the batch-norm statistics.
    `metric`, if given, is measured on the float model before and on the integer IR after.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if config.data_free:
        data = loss_fn = None
    elif not calibration:
        raise ValueError(
            "compression with data needs calibration batches for the activation ranges; "
            "set data_free=True to take them from the batch-norm statistics instead"
        )
    if (data is None) != (loss_fn is None):
        raise ValueError("data and loss_fn come together: training needs both, projection-only compression neither")
    report_phase = _phase_reporter(progress)

    original = model
    model = copy.deepcopy(original).eval()
    before = _measure(metric, original, timings, "metric_before")
    if loss_fn is not None and (config.distillation_weight > 0 or config.feature_distillation_weight > 0):
        loss_fn = with_distillation(
            loss_fn,
            frozen_teacher(copy.deepcopy(original)),
            config.distillation_weight,
            feature_layers=config.feature_distillation_layers,
            feature_weight=config.feature_distillation_weight,
        )

    pruning_report = None
    if config.pruning is not None:
        phase_started = time.perf_counter()
        pruning_report = prune_(model, config.pruning, data=data, loss_fn=loss_fn, progress=progress)
        timings["pruning"] = time.perf_counter() - phase_started

    phase_started = time.perf_counter()
    quantization_report = quantize_(model, config.quantization, data=data, loss_fn=loss_fn, progress=progress)
    timings["quantization"] = time.perf_counter() - phase_started
    model.eval()

    report_phase("calibration")
    phase_started = time.perf_counter()
    if config.data_free:
        ranges = data_free_ranges(model, input_range=config.input_range, input_channels=config.input_shape[1])
    else:
        ranges = calibrate(model, calibration, percentile=config.calibration_percentile)
    timings["calibration"] = time.perf_counter() - phase_started

    report_phase("lowering")
    phase_started = time.perf_counter()
    integer_model = lower(model, config.input_shape, ranges, metadata=dict(config.metadata))
    timings["lowering"] = time.perf_counter() - phase_started

    after = _measure(metric, integer_model, timings, "metric_after")
    timings["total"] = time.perf_counter() - started
    report = build_report(
        original,
        integer_model,
        quantization=quantization_report,
        pruning=pruning_report,
        data_free=config.data_free,
        metric_before=before,
        metric_after=after,
        timings=timings,
    )
    report_phase("done")
    return CompressionResult(model, integer_model, report)


def _measure(metric: Metric | None, subject, timings: dict[str, float], key: str) -> float | None:
    if metric is None:
        return None
    started = time.perf_counter()
    value = float(metric(subject))
    timings[key] = time.perf_counter() - started
    return value


def _phase_reporter(progress: ProgressCallback | None) -> Callable[[str], None]:
    """Report the short phases after training as one step each, so a progress bar reaches its end."""

    def report(phase: str) -> None:
        if progress is not None:
            progress(Progress(phase=phase, step=1, total=1))

    return report
