"""The package self-test on a runtime: its frames run, each output compared with the reference outputs in LSBs.

The reference runtime must reproduce them exactly. ONNX Runtime may differ by rounding, at most 1 LSB per layer
(DESIGN.md, "Integer semantics"), which accumulates along the network. Measured largest differences end to
end: 2 LSB on the shipped detector (calibrated, int8_max_code=64, rendered frames; benchmarks/runtimes.py) and
5 LSB on a detector-shaped synthetic model fed uniform noise (tests/edge_agent/runtimes); the default tolerance
of 8 leaves room above both. A model.onnx made from another model differs by hundreds of LSB.
"""

from dataclasses import dataclass, field

import numpy as np

from edge_agent.runtimes.base import Runtime
from model_store.ir import Quant
from model_store.package import Package

DEFAULT_TOLERANCE_LSB = 8
EXACT_RUNTIMES = frozenset({"reference"})
BATCH_SIZE = 4


@dataclass(frozen=True)
class SelftestResult:
    passed: bool
    # Largest |runtime code - reference code| per IR output, over every self-test frame.
    max_abs_lsb_diff: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    tolerance_lsb: int = 0
    frames: int = 0


def run_selftest(runtime: Runtime, package: Package, tolerance_lsb: int | None = None) -> SelftestResult:
    """Run `package`'s self-test frames on a runtime that has loaded it and compare with the reference outputs.

    `tolerance_lsb` defaults to 0 for exact runtimes (reference) and DEFAULT_TOLERANCE_LSB otherwise.
    A malformed self-test set fails with a reason instead of raising.
    """
    if tolerance_lsb is None:
        tolerance_lsb = 0 if runtime.name in EXACT_RUNTIMES else DEFAULT_TOLERANCE_LSB
    if runtime.package is not package:
        raise ValueError(f"selftest: runtime {runtime.name} has not loaded this package; call load(package) first")
    model = package.integer_model()
    arrays = package.selftest()
    (input_name,) = model.inputs
    missing = [name for name in (input_name, *model.outputs) if name not in arrays]
    if missing:
        return SelftestResult(False, reason=f"selftest.npz has no array for {', '.join(missing)}")
    frames = arrays[input_name]
    if frames.dtype != np.uint8 or frames.ndim != 4 or len(frames) == 0:
        return SelftestResult(False, reason=f"selftest frames must be uint8 (N, C, H, W), got {frames.shape}")
    try:
        batches = [runtime.infer(frames[i : i + BATCH_SIZE]) for i in range(0, len(frames), BATCH_SIZE)]
    except ValueError as error:
        return SelftestResult(False, reason=f"runtime {runtime.name} failed on the self-test frames: {error}")
    diffs = {}
    for name in model.outputs:
        produced = np.concatenate([batch[name] for batch in batches])
        expected = arrays[name]
        if produced.shape != expected.shape:
            return SelftestResult(
                False, reason=f"output {name}: shape {produced.shape}, the reference has {expected.shape}"
            )
        codes = requantize(model.tensors[name].quant, produced)
        diffs[name] = int(np.abs(codes - expected.astype(np.int32)).max())
    worst = max(diffs, key=diffs.get)
    passed = diffs[worst] <= tolerance_lsb
    reason = (
        "" if passed else f"output {worst} differs from the reference by {diffs[worst]} LSB (tolerance {tolerance_lsb})"
    )
    return SelftestResult(passed, diffs, reason, tolerance_lsb, len(frames))


def requantize(quant: Quant, values: np.ndarray) -> np.ndarray:
    """The int32 codes of dequantized values: the inverse of `model_store.reference.dequantize`, unsaturated."""
    return np.rint(np.asarray(values, np.float64) / quant.scale + quant.zero_point).astype(np.int32)
