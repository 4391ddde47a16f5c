"""Compression of the smart-park detector and of a digits classifier: accuracy against size, per method.

Every compressed detector is lowered to the integer IR, exported to ONNX int8 QDQ and evaluated by
ONNX Runtime on held-out frames (``smartpark.evaluate``), so its mAP is that of the integer model a
device runs, not of a float simulation. The rows: fp32 torch (the baseline, same frames, same run);
ONNX Runtime's own post-training int8 quantization (``quantize_static``, QDQ, per-channel weights) as
the peer; plain projection onto each codebook with data calibration but no ADMM; ADMM binary,
ternary, {0, +-1, +-2} and {0, +-1, +-2, +-4}; ADMM mixed by width (ternary in layers of 128 or more
output channels, {+-4} in the narrower ones); ADMM mixed by sensitivity (ternary, except the layers
whose projection alone raises the loss most, {+-4} within 5 % of the weights); 90 % pruning then ADMM
{+-4}; and data-free {+-4}
(projection and batch-norm-statistics calibration only). The first and last layers keep int8 codes
in every compressed row. Every training method distills from the fp32 detector, and after ADMM's hard
assignment its fine-tuning moves the codes too (straight-through); pruning ranks weights globally by
|w dL/dw| over 30 cuts. All of them train on the same frames, rendered once into a pool. Compression
ratio is fp32 parameter bytes over the bytes of the whole ``model.ir`` file (for the peer: over its
ONNX file).

The digits classifier (scikit-learn's ``load_digits``, real handwriting that ships offline) repeats
the codebook comparison on a second dataset; its accuracy is measured on the integer model by the
numpy reference executor.
"""

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmarks.harness import Comparison, Options, Result, Table

# What the issue asks of the compressed detector (issue #4), in mAP@0.5 points (1.0 = one point).
TARGETS = {
    "pow2_4_max_loss_points": 1.0,
    "ternary_max_loss_points": 2.5,
    "admm_over_naive_ternary_min_points": 5.0,
    "pruned_min_ratio": 40.0,
    "pruned_max_loss_points": 1.5,
}
TRAINING_SEED = 1  # scenes of training seed 1: the training distribution, never the held-out seeds
BATCH_SIZE = 8
# Held-out frames per condition (800 in all, as benchmarks/smartpark.py scores): with 50 per condition a
# sample moved a compressed model's score by about two points, as much as the differences being measured.
HELDOUT_FRAMES_PER_CONDITION = 200
POOL_DIRECTORY = Path(__file__).parent / "scratch" / "frame-pool"
CALIBRATION_FRAMES = 32
# Chosen by `python -m benchmarks.compression_sweep` (docs/benchmarks.md gives its results): every training
# method distills from the fp32 detector, and pruning ranks weights globally at a rate that lets it recover.
DISTILLATION_WEIGHT = 1.0
# After ADMM's hard assignment, fine-tuning moves the codes too (straight-through): the best ternary sweep runs.
FINETUNE_CODES = True
PRUNING_LEARNING_RATE = 1e-3
# Mixed precision by width (the platform's `ternary-mixed` preset): ternary where a layer has 128 or more
# output channels, pow2-4 in the narrower ones, where the sweep found all of ternary's loss.
MIXED_ROW = "ADMM ternary (128+ channels) + pow2-4 (narrower)"
# Mixed precision by sensitivity (the platform's `ternary-sensitive` preset): ternary except the layers whose
# projection alone raises the loss most, which take pow2-4 within 5 % of the weights (compression.sensitivity).
SENSITIVE_ROW = "ADMM ternary + pow2-4 in the most sensitive 5 %"


@dataclass(frozen=True)
class Budget:
    """Steps per method: what fits `make bench` on a 2-core CPU (the full run), or a smoke run (--quick)."""

    frames_per_condition: int
    admm_steps: int
    finetune_steps: int
    pruning_steps: int
    finetune_per_pruning_step: int
    digits_epochs: int
    digits_admm_steps: int

    @classmethod
    def for_options(cls, options: Options) -> "Budget":
        if options.quick:
            return cls(8, 6, 2, 2, 2, 3, 10)
        return cls(HELDOUT_FRAMES_PER_CONDITION, 2400, 600, 30, 150, 30, 300)


def _training_batches(budget: Budget, log):
    """Training batches (seeded, in order) from a pool of frames rendered once for every method, cycled as needed.

    Every method trains on the same frames, so rendering them once (in parallel, kept under
    benchmarks/scratch for the next run) instead of once per method halves the benchmark's time.
    """
    from torch.utils.data import DataLoader

    from benchmarks.frame_pool import PoolDataset, render_pool

    frames = (budget.admm_steps + budget.finetune_steps) * BATCH_SIZE
    pool = render_pool(POOL_DIRECTORY / f"seed{TRAINING_SEED}-{frames}", TRAINING_SEED, frames, log=log)
    return DataLoader(PoolDataset(pool), batch_size=BATCH_SIZE, shuffle=False)


def _detector_loss(model, batch):
    """The training loss of the detector on a batch, on whatever device the model is (the sweep runs it on a GPU)."""
    import torch

    from smartpark.train import _to_training_input, centernet_loss, cpu_has_native_bf16

    device = next(model.parameters()).device
    batch = {name: value.to(device, non_blocking=True) for name, value in batch.items()}
    images = _to_training_input(batch.pop("image"))
    bf16 = device.type == "cuda" or cpu_has_native_bf16()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        outputs = model(images)
    loss, _ = centernet_loss(outputs, batch)
    return loss


class OrtDetector:
    """An ONNX model (float outputs: heatmap logits, log size, offset) run by ONNX Runtime as a detector."""

    def __init__(self, onnx_bytes: bytes, uint8_input: bool):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.uint8_input = uint8_input

    def __call__(self, images: np.ndarray):
        from smartpark.decode import decode
        from smartpark.evaluate import EVAL_SCORE_THRESHOLD

        batch = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        if not self.uint8_input:
            batch = batch.astype(np.float32) / 255.0
        heatmap, log_size, offset = self.session.run(None, {self.input: batch})
        return decode(heatmap, log_size, offset, image_size=images.shape[1:3], score_threshold=EVAL_SCORE_THRESHOLD)


def _peer_int8(model, calibration_images: np.ndarray) -> bytes:
    """ONNX Runtime's static post-training quantization of the fp32 ONNX model: the tool a team would reach for."""
    import os
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from smartpark.detector import export_fp32_onnx

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(
                [{"image": (frame.transpose(2, 0, 1)[None] / 255.0).astype(np.float32)} for frame in calibration_images]
            )

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as workdir:
        source, target = os.path.join(workdir, "fp32.onnx"), os.path.join(workdir, "int8.onnx")
        with open(source, "wb") as file:
            file.write(export_fp32_onnx(model))
        quantize_static(
            source,
            target,
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        with open(target, "rb") as file:
            return file.read()


def _row(name: str, report: dict, seconds: float, fp32_bytes: int, model_bytes: int, **extra) -> dict:
    return {
        "method": name,
        "map50": report["overall"]["mAP50"],
        "map": report["overall"]["mAP"],
        "vehicle_ap50": report["overall"]["vehicle"]["AP50"],
        "person_ap50": report["overall"]["person"]["AP50"],
        "model_bytes": model_bytes,
        "compression_ratio": fp32_bytes / model_bytes,
        "seconds": seconds,
        **extra,
    }


def _detector_rows(budget: Budget, log) -> tuple[list[dict], dict]:
    import torch

    from compression.admm import AdmmQuantConfig
    from compression.onnx_export import export_onnx
    from compression.pipeline import CompressConfig, compress
    from compression.pruning import PruneConfig
    from model_store.ir import Codebook
    from smartpark.detector import load_detector, preprocess
    from smartpark.evaluate import evaluate_detector, heldout_frames
    from smartpark.scenes import render_training_sample

    torch.set_num_threads(2)
    # channels_last is the layout the detector trains fastest in on CPU (smartpark.train does the same).
    model = load_detector().to(memory_format=torch.channels_last)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    frames = heldout_frames(budget.frames_per_condition)
    calibration_images = np.stack(
        [render_training_sample(TRAINING_SEED * 10_000_000 + 5_000_000 + i).image for i in range(CALIBRATION_FRAMES)]
    )
    calibration = [preprocess(calibration_images[i : i + 8]) for i in range(0, CALIBRATION_FRAMES, 8)]

    rows = []
    started = time.perf_counter()
    fp32 = evaluate_detector(model, frames)
    rows.append(_row("fp32 (torch)", fp32, time.perf_counter() - started, fp32_bytes, fp32_bytes))
    log(f"fp32 mAP@0.5 {rows[-1]['map50']:.4f}")

    started = time.perf_counter()
    peer = _peer_int8(model, calibration_images)
    peer_s = time.perf_counter() - started
    rows.append(
        _row(
            "int8 PTQ, ONNX Runtime quantize_static",
            evaluate_detector(OrtDetector(peer, False), frames),
            peer_s,
            fp32_bytes,
            len(peer),
        )
    )
    log(f"peer int8 mAP@0.5 {rows[-1]['map50']:.4f}")

    admm = AdmmQuantConfig(
        admm_steps=budget.admm_steps, finetune_steps=budget.finetune_steps, finetune_codes=FINETUNE_CODES
    )
    no_admm = AdmmQuantConfig(admm_steps=0, finetune_steps=0)
    pruning = PruneConfig(
        target_sparsity=0.9,
        pruning_steps=budget.pruning_steps,
        finetune_steps_per_pruning_step=budget.finetune_per_pruning_step,
        learning_rate=PRUNING_LEARNING_RATE,
        scope="global",
    )
    methods = [
        *[
            (f"projection only, {cb}", CompressConfig(replace(no_admm, codebook=cb)), False)
            for cb in (Codebook.BINARY, Codebook.TERNARY, Codebook.POW2_2, Codebook.POW2_4)
        ],
        *[
            (f"ADMM {cb}", CompressConfig(replace(admm, codebook=cb), distillation_weight=DISTILLATION_WEIGHT), True)
            for cb in (Codebook.BINARY, Codebook.TERNARY, Codebook.POW2_2, Codebook.POW2_4)
        ],
        (
            MIXED_ROW,
            CompressConfig(
                replace(admm, codebook=Codebook.TERNARY, narrow_codebook=Codebook.POW2_4),
                distillation_weight=DISTILLATION_WEIGHT,
            ),
            True,
        ),
        (
            SENSITIVE_ROW,
            CompressConfig(
                replace(admm, codebook=Codebook.TERNARY, sensitive_codebook=Codebook.POW2_4),
                distillation_weight=DISTILLATION_WEIGHT,
            ),
            True,
        ),
        (
            "90 % pruned + ADMM pow2-4",
            CompressConfig(
                replace(admm, codebook=Codebook.POW2_4), pruning=pruning, distillation_weight=DISTILLATION_WEIGHT
            ),
            True,
        ),
        ("data-free pow2-4", CompressConfig(replace(no_admm, codebook=Codebook.POW2_4), data_free=True), False),
    ]
    training_batches = _training_batches(budget, log)
    reports = {}
    for name, config, trains in methods:
        started = time.perf_counter()
        result = compress(
            model,
            config,
            data=training_batches if trains else None,
            loss_fn=_detector_loss if trains else None,
            calibration=[] if config.data_free else calibration,
        )
        seconds = time.perf_counter() - started
        report = result.report
        onnx_model = export_onnx(result.integer_model)
        evaluation = evaluate_detector(OrtDetector(onnx_model, True), frames)
        rows.append(_row(name, evaluation, seconds, fp32_bytes, report.packed_bytes, sparsity=report.sparsity))
        reports[name] = report.to_dict()
        log(f"{name}: mAP@0.5 {rows[-1]['map50']:.4f}, {report.compression_ratio:.1f}x, {seconds:.0f} s")
    return rows, {"fp32": fp32, "reports": reports, "frames": len(frames)}


def _digits_rows(budget: Budget, log) -> list[dict]:
    import torch

    from benchmarks import digits
    from compression.admm import AdmmQuantConfig
    from compression.pipeline import CompressConfig, compress
    from model_store import reference
    from model_store.ir import Codebook

    torch.set_num_threads(2)
    data = digits.load()
    model = digits.train(data, epochs=budget.digits_epochs)
    images, labels = data.test.tensors
    codes = np.clip(np.round(images.numpy() * 255), 0, 255).astype(np.uint8)

    def integer_accuracy(integer_model) -> float:
        (output,) = integer_model.outputs
        logits = reference.run(integer_model, codes)[output].reshape(len(codes), -1)
        return float((logits.argmax(1) == labels.numpy()).mean())

    calibration = [data.train.tensors[0]]
    rows = [{"method": "fp32 (torch)", "codebook": "fp32", "accuracy": digits.accuracy(model, data.test)}]
    for codebook in (Codebook.BINARY, Codebook.TERNARY, Codebook.POW2_2, Codebook.POW2_4, Codebook.INT8):
        for method, steps in (("projection only", 0), ("ADMM", budget.digits_admm_steps)):
            config = CompressConfig(
                AdmmQuantConfig(
                    codebook=codebook,
                    admm_steps=steps,
                    finetune_steps=steps // 3,
                    learning_rate=1e-3,
                    finetune_codes=FINETUNE_CODES,
                ),
                input_shape=(1, 1, 8, 8),
            )
            result = compress(
                model,
                config,
                data=digits.loader(data.train) if steps else None,
                loss_fn=digits.loss_fn if steps else None,
                calibration=calibration,
            )
            accuracy = integer_accuracy(result.integer_model)
            rows.append(
                {
                    "method": method,
                    "codebook": str(codebook),
                    "accuracy": accuracy,
                    "compression_ratio": result.report.compression_ratio,
                }
            )
            log(f"digits {method} {codebook}: accuracy {accuracy:.4f}")
    return rows


def _detector_table(rows: list[dict]) -> str:
    lines = [
        "| method | mAP@0.5 | mAP@[.5:.95] | compression ratio | model bytes | wall time |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['method']} | {r['map50']:.3f} | {r['map']:.3f} | {r['compression_ratio']:.1f}x "
        f"| {r['model_bytes']:,} | {r['seconds']:.0f} s |"
        for r in rows
    ]
    return "\n".join(lines)


def _digits_table(rows: list[dict]) -> str:
    by_codebook: dict[str, dict[str, dict]] = {}
    for row in rows[1:]:
        by_codebook.setdefault(row["codebook"], {})[row["method"]] = row
    lines = [
        f"fp32 accuracy {rows[0]['accuracy']:.3f} on 450 test digits (integer models run by the reference executor).",
        "",
        "| codebook | projection only | ADMM | compression ratio (ADMM) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {codebook} | {methods['projection only']['accuracy']:.3f} | {methods['ADMM']['accuracy']:.3f} "
        f"| {methods['ADMM']['compression_ratio']:.1f}x |"
        for codebook, methods in by_codebook.items()
    ]
    return "\n".join(lines)


def _target_lines(rows: list[dict]) -> list[str]:
    by_method = {r["method"]: r for r in rows}
    fp32 = by_method["fp32 (torch)"]["map50"]

    def loss_points(method: str) -> float:
        return 100 * (fp32 - by_method[method]["map50"])

    pow2 = loss_points("ADMM pow2-4")
    ternary = loss_points("ADMM ternary")
    gain = 100 * (by_method["ADMM ternary"]["map50"] - by_method["projection only, ternary"]["map50"])
    pruned = by_method["90 % pruned + ADMM pow2-4"]
    pruned_loss = loss_points("90 % pruned + ADMM pow2-4")
    mixed = by_method[MIXED_ROW]
    sensitive = by_method[SENSITIVE_ROW]

    def ratio(method: str) -> float:
        return by_method[method]["compression_ratio"]

    pruned_ok = (
        pruned["compression_ratio"] >= TARGETS["pruned_min_ratio"] and pruned_loss <= TARGETS["pruned_max_loss_points"]
    )

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    return [
        f"- ADMM pow2-4 loses {pow2:.2f} points of mAP@0.5 (target <= 1.0): "
        f"{verdict(pow2 <= TARGETS['pow2_4_max_loss_points'])}",
        f"- ADMM ternary loses {ternary:.2f} points (target <= 2.5): "
        f"{verdict(ternary <= TARGETS['ternary_max_loss_points'])}",
        f"- ADMM beats projection at ternary by {gain:.2f} points (target >= 5): "
        f"{verdict(gain >= TARGETS['admm_over_naive_ternary_min_points'])}",
        f"- 90 % pruned + pow2-4: {pruned['compression_ratio']:.1f}x (target >= 40x) losing {pruned_loss:.2f} points "
        f"(target <= 1.5): {verdict(pruned_ok)}",
        f"- (no target) ternary in the wide layers, pow2-4 in the narrow ones: {mixed['compression_ratio']:.1f}x "
        f"losing {loss_points(MIXED_ROW):.2f} points (ADMM pow2-4: {ratio('ADMM pow2-4'):.1f}x, "
        f"ADMM ternary: {ratio('ADMM ternary'):.1f}x)",
        f"- (no target) ternary but for the most sensitive layers (5 % of the weights) on pow2-4: "
        f"{sensitive['compression_ratio']:.1f}x losing {loss_points(SENSITIVE_ROW):.2f} points",
    ]


def run(options: Options) -> Result:
    budget = Budget.for_options(options)

    def log(message: str) -> None:
        print(f"   {message}", flush=True)

    started = time.perf_counter()
    detector_rows, details = _detector_rows(budget, log)
    detector_s = time.perf_counter() - started
    digit_rows = _digits_rows(budget, log)
    by_method = {r["method"]: r for r in detector_rows}
    fp32 = by_method["fp32 (torch)"]
    size = Table(
        "ADMM pow2-4 (integer, ONNX Runtime)",
        "fp32 (torch)",
        [
            Comparison(
                "mAP@0.5, in points", 100 * by_method["ADMM pow2-4"]["map50"], 100 * fp32["map50"], unit="points"
            ),
            Comparison(
                "model bytes (lower is better)", by_method["ADMM pow2-4"]["model_bytes"], fp32["model_bytes"], unit="B"
            ),
        ],
        title="The headline: 3-bit power-of-two weights against the float model",
    )
    return Result(
        title="compression of the smart-park detector and of a digits classifier",
        description=__doc__.split("\n\n", 1)[1],
        tables=[size],
        markdown=[
            f"**Detector, {details['frames']} held-out frames ({budget.frames_per_condition} per condition), "
            f"ADMM {budget.admm_steps} steps + {budget.finetune_steps} fine-tuning steps at batch {BATCH_SIZE}**\n\n"
            + _detector_table(detector_rows),
            "**Targets (issue #4)**\n\n" + "\n".join(_target_lines(detector_rows)),
            "**Digits (scikit-learn load_digits), the same codebooks on a second dataset**\n\n"
            + _digits_table(digit_rows),
        ],
        notes=[
            f"The detector rows took {detector_s / 60:.0f} min in all on this machine.",
            "Reproduce with `.venv/bin/python -m benchmarks compression` (part of `make bench`).",
        ],
        details={
            "detector": detector_rows,
            "digits": digit_rows,
            "reports": details["reports"],
            "budget": budget.__dict__,
            "targets": TARGETS,
        },
    )
