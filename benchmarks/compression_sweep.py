"""Try compression settings side by side on the detector, to choose what `benchmarks/compression.py` runs.

    python -m benchmarks.compression_sweep --device cuda --out results/ [--only NAME ...] [--scale 0.1]

Each named experiment (EXPERIMENTS) runs in its own process, all at once, on frames rendered once into a
shared pool (`benchmarks.frame_pool`): pruning (optional), ADMM quantization, then calibration, lowering to
the integer IR and evaluation of the ONNX int8 model by ONNX Runtime, exactly as the benchmark measures,
on validation frames (choose settings by these) and on the benchmark's own held-out frames. A GPU runs
several experiments at once; on a CPU pick a few with --only (each gets CPUs / N torch threads; two full
ternary runs take about 10 minutes on 2 cores) or shrink them with --scale. Every result, with the fp32
detector's score on the same frames, is appended to OUT/results.jsonl as it comes, every log line to
OUT/log.txt.

    python -m benchmarks.compression_sweep --out results/ --layer-sensitivity ternary

instead measures how much the codebook costs each layer of the fp32 detector on its own: every layer that
`compression` quantizes (all but the first and last) is projected alone, the others left in float, and
scored on the validation frames (mAP@0.5 of the float model, no training) and on the training loss with
distillation over 8 pool batches (`compression.sensitivity`, what `AdmmQuantConfig.sensitive_codebook`
ranks by); rows go to OUT/sensitivity.jsonl.
"""

import argparse
import copy
import json
import os
import pickle
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.compression import HELDOUT_FRAMES_PER_CONDITION

BATCH_SIZE = 8
TRAINING_SEED = 1
# The benchmark scores held-out frames 0..199 of each condition; validation frames start far above them.
VALIDATION_FRAMES_PER_CONDITION = 200
VALIDATION_OFFSET = 500_000


@dataclass(frozen=True)
class Experiment:
    codebook: str
    admm_steps: int
    finetune_steps: int
    learning_rate: float = 5e-4
    distillation_weight: float = 0.0
    # > 0: also match the fp32 detector's activations at smartpark.detector.DISTILLATION_FEATURES.
    feature_distillation_weight: float = 0.0
    finetune_schedule: str = "cosine"
    # > 0: after quantization, batch-norm statistics are re-estimated over this many training batches (the
    # integer model is scored before and after, so one run gives a paired comparison).
    bn_reestimation_batches: int = 0
    batch_size: int = BATCH_SIZE
    # What distillation matches: "logits" (every output everywhere, output_mse) or "centernet"
    # (smartpark.train.centernet_distillation_loss: probabilities, and boxes where objects are).
    output_distillation: str = "logits"
    # Layers kept int8 beside the first and last (module names).
    int8_layers: tuple[str, ...] = ()
    # Another codebook for these layers (mixed precision): (codebook, module names).
    other_codebook: tuple[str, tuple[str, ...]] | None = None
    # Mixed precision by sensitivity (AdmmQuantConfig.sensitive_codebook): (codebook, fraction of the weights).
    sensitive: tuple[str, float] | None = None
    finetune_learning_rate: float = 5e-4
    finetune_codes: bool = False
    # Each quantized layer's rate follows its weight norm (AdmmQuantConfig.scale_relative_rate); False, the
    # fixed rate, is what every row recorded before it ran, extra-gradient included.
    scale_relative_rate: bool = False
    # The W-step on the loss: "adam", "extragradient-sgd" (learning_rate is then an SGD rate), "extragradient-adam".
    w_step: str = "adam"
    momentum: float = 0.9
    rho: float = 0.01
    rho_final: float = 3.0
    # Pruning (None: none): target sparsity, cuts, steps after each cut, rate, importance scope.
    sparsity: float | None = None
    pruning_steps: int = 20
    steps_per_cut: int = 60
    pruning_learning_rate: float = 1e-4
    pruning_scope: str = "layer"
    # Progressive quantization (Zhuang et al. 2018, "Towards effective low-bitwidth convolutional neural
    # networks"): ADMM on these wider codebooks first, (codebook, ADMM steps, fine-tuning steps) each, every one
    # starting from the last one's quantized weights, then the experiment's own codebook.
    warm_start: tuple[tuple[str, int, int], ...] = ()
    # Replicates: training starts this many frames into the pool (and wraps around), other frames, same setting.
    pool_offset: int = 0
    # Another float detector to compress (a checkpoint path; None: the shipped one). Its own fp32 scores on the
    # same frames are then the row's baseline.
    checkpoint: str | None = None

    def scaled(self, scale: float) -> "Experiment":
        def steps(n: int) -> int:
            return max(1, round(n * scale))

        return Experiment(
            **{
                **asdict(self),
                "admm_steps": steps(self.admm_steps),
                "finetune_steps": steps(self.finetune_steps),
                "pruning_steps": max(2, round(self.pruning_steps * min(1.0, scale * 4))),
                "steps_per_cut": steps(self.steps_per_cut),
                "warm_start": tuple((codebook, steps(a), steps(f)) for codebook, a, f in self.warm_start),
            }
        )

    @property
    def training_steps(self) -> int:
        pruning = self.pruning_steps * self.steps_per_cut if self.sparsity else 0
        warm_start = sum(admm + finetune for _, admm, finetune in self.warm_start)
        return pruning + warm_start + self.admm_steps + self.finetune_steps

    @property
    def pool_frames(self) -> int:
        """Frames the pool needs for the quantization (warm starts included) to see each frame once, from
        pool_offset on; pruning cycles the pool, as the benchmark's pruning row does."""
        warm_start = sum(admm + finetune for _, admm, finetune in self.warm_start)
        return self.pool_offset + (warm_start + self.admm_steps + self.finetune_steps) * self.batch_size


# The detector's convolutions of the stride-16 stage, and the narrow ones (16 to 64 channels) before and after it
# except the first and last layers, which stay int8 anyway.
STAGE16_LAYERS = tuple(["stage16.0.0"] + [f"stage16.{block}.body.{conv}.0" for block in (1, 2, 3) for conv in (0, 1)])
NARROW_LAYERS = (
    "stage4.0.0",
    *[f"stage4.1.body.{conv}.0" for conv in (0, 1)],
    "stage8.0.0",
    *[f"stage8.{block}.body.{conv}.0" for block in (1, 2) for conv in (0, 1)],
    *["reduce16.0", "lateral8.0", "merge8.0", "reduce8.0", "lateral4.0", "merge4.0"],
    *["heatmap_head.hidden.0", "box_head.hidden.0"],
)

STAGE4_LAYERS = ("stage4.0.0", "stage4.1.body.0.0", "stage4.1.body.1.0")
HEAD_HIDDEN_LAYERS = ("heatmap_head.hidden.0", "box_head.hidden.0")

# Extra-gradient SGD rates: Adam's 5e-4 per weight is an SGD rate of 0.02 to 0.4 for the 16- to 256-channel layers
# of the detector and 0.002 to 0.008 for its first and last (their mean gradients over 8 batches); with
# momentum 0.9 an SGD step is ten times its rate.
EXPERIMENTS = {
    "ternary": Experiment("ternary", 1200, 300, finetune_schedule="constant"),
    "ternary-kd": Experiment("ternary", 1200, 300, distillation_weight=1.0),
    "ternary-long-kd": Experiment("ternary", 2400, 600, distillation_weight=1.0),
    "ternary-long-kd-lr1e-3": Experiment("ternary", 2400, 600, learning_rate=1e-3, distillation_weight=1.0),
    "pow2-4-long-kd": Experiment("pow2-4", 2400, 600, distillation_weight=1.0),
    "pruned-layer-lr5e-4-kd": Experiment(
        "pow2-4", 2400, 600, distillation_weight=1.0, sparsity=0.9, steps_per_cut=100, pruning_learning_rate=5e-4
    ),
    "pruned-global-lr5e-4-kd": Experiment(
        "pow2-4",
        2400,
        600,
        distillation_weight=1.0,
        sparsity=0.9,
        steps_per_cut=100,
        pruning_learning_rate=5e-4,
        pruning_scope="global",
    ),
    "pruned-global-long-lr1e-3-kd": Experiment(
        "pow2-4",
        2400,
        600,
        distillation_weight=1.0,
        sparsity=0.9,
        pruning_steps=30,
        steps_per_cut=150,
        pruning_learning_rate=1e-3,
        pruning_scope="global",
    ),
    "ternary-kd-rho10": Experiment("ternary", 1200, 300, distillation_weight=1.0, rho_final=10.0),
    "ternary-kd-ftlr2e-3": Experiment("ternary", 1200, 300, distillation_weight=1.0, finetune_learning_rate=2e-3),
    "ternary-kd5": Experiment("ternary", 1200, 300, distillation_weight=5.0),
    "ternary-kd-rho1e-3": Experiment("ternary", 1200, 300, distillation_weight=1.0, rho=1e-3),
    "ternary-kd-lr2e-3": Experiment("ternary", 1200, 300, learning_rate=2e-3, distillation_weight=1.0),
    "ternary-kd-rho30": Experiment("ternary", 1200, 300, distillation_weight=1.0, rho_final=30.0),
    "ternary-kd-ste": Experiment("ternary", 1200, 300, distillation_weight=1.0, finetune_codes=True),
    # All four extra-gradient runs diverged before step 1,200 (docs/benchmarks.md, fourth round).
    **{
        f"ternary-extragradient-lr{rate}": Experiment(
            "ternary",
            2400,
            600,
            distillation_weight=1.0,
            finetune_codes=True,
            w_step="extragradient-sgd",
            learning_rate=float(rate),
        )
        for rate in ("2e-3", "5e-3", "5e-4")
    },
    "ternary-extragradient-adam": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, w_step="extragradient-adam"
    ),
    # If the look-ahead only halved the stable rate (on a quadratic of curvature h it multiplies the error by
    # 1 - lr h + (lr h)^2, stable for lr h < 1 where gradient descent is stable to 2), half or a quarter of
    # the rate would train. Both diverged by step 1,200 as 5e-4 did (docs/benchmarks.md, fourth round).
    **{
        f"ternary-extragradient-adam-lr{rate}": Experiment(
            "ternary",
            2400,
            600,
            distillation_weight=1.0,
            finetune_codes=True,
            w_step="extragradient-adam",
            learning_rate=float(rate),
        )
        for rate in ("2.5e-4", "1.25e-4")
    },
    # The prox shrinks the weights that batch norm makes scale-free (median layer to a quarter in 1,000 steps), so
    # a fixed rate grows relative to them: the benchmark's ternary row, and extra-gradient, with rates that follow.
    "ternary-scale-relative": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, scale_relative_rate=True
    ),
    # Is it the size of the relative step? Fixed rates with twice the fine-tuning rate; relative rates four times.
    "ternary-ftlr1e-3": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, finetune_learning_rate=1e-3
    ),
    "ternary-scale-relative-lr2e-3": Experiment(
        "ternary",
        2400,
        600,
        distillation_weight=1.0,
        finetune_codes=True,
        scale_relative_rate=True,
        learning_rate=2e-3,
        finetune_learning_rate=2e-3,
    ),
    "ternary-extragradient-adam-scale-relative": Experiment(
        "ternary",
        2400,
        600,
        distillation_weight=1.0,
        finetune_codes=True,
        w_step="extragradient-adam",
        scale_relative_rate=True,
    ),
    # The paper's own W-step, extra-gradient SGD, with rates that follow the weights' scale.
    **{
        f"ternary-extragradient-sgd-scale-relative-lr{rate}": Experiment(
            "ternary",
            2400,
            600,
            distillation_weight=1.0,
            finetune_codes=True,
            w_step="extragradient-sgd",
            learning_rate=float(rate),
            scale_relative_rate=True,
        )
        for rate in ("2e-3", "5e-3")
    },
    # Diagnostics of the same divergence: rho held at its start (no growth), and training on other frames.
    "ternary-extragradient-adam-rho-fixed": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, w_step="extragradient-adam", rho_final=0.01
    ),
    "ternary-extragradient-adam-offset8000": Experiment(
        "ternary",
        2400,
        600,
        distillation_weight=1.0,
        finetune_codes=True,
        w_step="extragradient-adam",
        pool_offset=8000,
    ),
    "ternary-ste": Experiment("ternary", 1200, 300, finetune_codes=True),
    "ternary-kd-ste-qat1500": Experiment("ternary", 1500, 1500, distillation_weight=1.0, finetune_codes=True),
    # The compression benchmark's own ternary row, to compare a sweep run with a benchmark run.
    "ternary-as-benchmarked": Experiment("ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True),
    "ternary-kd-ste-600": Experiment("ternary", 600, 600, distillation_weight=1.0, finetune_codes=True),
    # Feature distillation (this session's question): the same schedule with and without it, at two weights.
    "ternary-kd-ste-feat1": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, feature_distillation_weight=1.0, finetune_codes=True
    ),
    "ternary-kd-ste-feat0.2": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, feature_distillation_weight=0.2, finetune_codes=True
    ),
    # Batch-norm re-estimation after quantization (scored before and after in the same run).
    "ternary-as-benchmarked-bn": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, bn_reestimation_batches=300
    ),
    "pow2-4-as-benchmarked-bn": Experiment(
        "pow2-4", 2400, 600, distillation_weight=1.0, finetune_codes=True, bn_reestimation_batches=300
    ),
    # Twice the training of the benchmark's ternary row: twice the steps, or twice the batch.
    "ternary-4800-1200": Experiment("ternary", 4800, 1200, distillation_weight=1.0, finetune_codes=True),
    "ternary-batch16": Experiment("ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, batch_size=16),
    "ternary-kd-centernet": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, output_distillation="centernet"
    ),
    # Where ternary loses: the two heads' hidden 3x3 convolutions (2 % of the weights) kept int8.
    "ternary-heads-int8": Experiment(
        "ternary",
        2400,
        600,
        distillation_weight=1.0,
        finetune_codes=True,
        int8_layers=("heatmap_head.hidden.0", "box_head.hidden.0"),
    ),
    # Where the ternary loss lives: the wide stride-16 stage (74 % of the weights) alone ternary, or all but it.
    "ternary-stage16-only": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, int8_layers=NARROW_LAYERS
    ),
    "ternary-except-stage16": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, int8_layers=STAGE16_LAYERS
    ),
    # Mixed precision by width: the wide stage ternary, the narrow layers on a wider codebook.
    "ternary-stage16-pow2-4-narrow": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, other_codebook=("pow2-4", NARROW_LAYERS)
    ),
    "ternary-stage16-pow2-2-narrow": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, other_codebook=("pow2-2", NARROW_LAYERS)
    ),
    # Mixed precision by sensitivity: ternary everywhere but the layers whose projection alone costs the fp32
    # detector most (the stride-4 stage, then the heads' hidden layers), which get pow2-4.
    "ternary-stage4-pow2-4": Experiment(
        "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, other_codebook=("pow2-4", STAGE4_LAYERS)
    ),
    "ternary-stage4-heads-pow2-4": Experiment(
        "ternary",
        2400,
        600,
        distillation_weight=1.0,
        finetune_codes=True,
        other_codebook=("pow2-4", STAGE4_LAYERS + HEAD_HIDDEN_LAYERS),
    ),
    # The same chosen by the loss (compression.sensitivity) within a budget of the weights, as the benchmark's
    # row and the platform's ternary-sensitive preset do at 5 %.
    **{
        f"ternary-sensitive-{percent}": Experiment(
            "ternary", 2400, 600, distillation_weight=1.0, finetune_codes=True, sensitive=("pow2-4", percent / 100)
        )
        for percent in (2, 5, 10)
    },
    # Progressive quantization against replicates of plain ternary (pool_offset: other frames, same setting).
    **{
        f"ternary-1200-offset{offset}": Experiment(
            "ternary", 1200, 300, distillation_weight=1.0, finetune_codes=True, pool_offset=offset
        )
        for offset in (0, 8000, 16000)
    },
    **{
        f"ternary-1200-from-pow2-4-offset{offset}": Experiment(
            "ternary",
            1200,
            300,
            distillation_weight=1.0,
            finetune_codes=True,
            warm_start=(("pow2-4", 600, 150),),
            pool_offset=offset,
        )
        for offset in (0, 8000, 16000)
    },
    "ternary-1200-from-pow2-4-pow2-2": Experiment(
        "ternary",
        1200,
        300,
        distillation_weight=1.0,
        finetune_codes=True,
        warm_start=(("pow2-4", 400, 100), ("pow2-2", 400, 100)),
    ),
    "ternary-1200-from-pow2-4-long": Experiment(
        "ternary", 1200, 300, distillation_weight=1.0, finetune_codes=True, warm_start=(("pow2-4", 1200, 300),)
    ),
    # Width: the shipped detector trained 800 more steps (batch 16, rate 1e-3, seed-2 frames) as it is, and
    # widened to 48 channels in its stride-4 stage, stride-4 neck and heads (smartpark.detector.widen, +46 %
    # MACs) then trained the same 800 steps; each compressed as the benchmark's ternary row (train them with
    # `python -m smartpark.train --init smartpark/checkpoints/detector.pt --seed 2 --steps 800 --lr 1e-3
    # [--stage-channels 48,64,128 --neck-channels 48,64 --head-channels 48] --out ...`, docs/benchmarks.md).
    **{
        f"ternary-{variant}": Experiment(
            "ternary",
            2400,
            600,
            distillation_weight=1.0,
            finetune_codes=True,
            checkpoint=f"benchmarks/scratch/{variant}/detector.pt",
        )
        for variant in ("narrow32", "wide48")
    },
    "pow2-4-long": Experiment("pow2-4", 2400, 600),
    "pow2-4-long-kd-rho10": Experiment("pow2-4", 2400, 600, distillation_weight=1.0, rho_final=10.0),
}


def admm_settings(experiment: Experiment) -> dict:
    """AdmmQuantConfig's arguments for every codebook an experiment runs, but the codebook and step counts."""
    return dict(
        learning_rate=experiment.learning_rate,
        w_step=experiment.w_step,
        momentum=experiment.momentum,
        finetune_schedule=experiment.finetune_schedule,
        finetune_learning_rate=experiment.finetune_learning_rate,
        finetune_codes=experiment.finetune_codes,
        scale_relative_rate=experiment.scale_relative_rate,
        rho=experiment.rho,
        rho_final=experiment.rho_final,
        int8_layers=experiment.int8_layers,
        layer_codebooks=dict.fromkeys(experiment.other_codebook[1], experiment.other_codebook[0])
        if experiment.other_codebook
        else {},
        sensitive_codebook=experiment.sensitive[0] if experiment.sensitive else None,
        sensitive_fraction=experiment.sensitive[1] if experiment.sensitive else 0.05,
    )


def layer_sensitivity_table(codebook: str, pool: Path, out: Path, validation_per_condition: int, log) -> list[dict]:
    """Each quantized layer of the fp32 detector projected onto `codebook` alone: its validation mAP@0.5
    and its loss increase (see the module docstring), one row per layer, most costly (by mAP) first."""
    import torch
    from torch.utils.data import DataLoader

    from benchmarks.compression import DISTILLATION_WEIGHT, _detector_loss
    from benchmarks.frame_pool import PoolDataset
    from compression.admm import AdmmQuantConfig
    from compression.distillation import frozen_teacher, with_distillation
    from compression.progress import cycle_batches
    from compression.pruning import weight_layers
    from compression.sensitivity import layer_sensitivity, projected_alone
    from smartpark.detector import load_detector
    from smartpark.evaluate import evaluate_detector

    extras = pickle.loads(_extras_path(pool, validation_per_condition).read_bytes())  # noqa: S301 (our pool)
    validation = extras["validation"]
    model = load_detector().to(memory_format=torch.channels_last)
    config = AdmmQuantConfig(codebook=codebook)
    plan = config.layer_codebook_plan(model)
    layers = weight_layers(model)
    names = config.sensitive_candidates(plan)
    loss_fn = with_distillation(_detector_loss, frozen_teacher(copy.deepcopy(model)), DISTILLATION_WEIGHT)
    batches = cycle_batches(DataLoader(PoolDataset(pool), batch_size=BATCH_SIZE, shuffle=False))
    loss_increase = layer_sensitivity(
        model, {name: (layers[name], plan[name], None) for name in names}, batches, loss_fn, config.sensitivity_batches
    )
    fp32 = evaluate_detector(model, validation)["overall"]["mAP50"]
    rows = []
    for name in names:
        with projected_alone(layers[name], plan[name]):
            map50 = evaluate_detector(model, validation)["overall"]["mAP50"]
        row = {
            "layer": name,
            "codebook": codebook,
            "weights": layers[name].weight.numel(),
            "fp32_validation_map50": fp32,
        }
        row |= {
            "validation_map50": map50,
            "map50_points_lost": 100 * (fp32 - map50),
            "loss_increase": loss_increase[name],
        }
        rows.append(row)
        _append(out / "sensitivity.jsonl", json.dumps(row))
        log(
            f"{name}: {row['weights']} weights, {row['map50_points_lost']:+.1f} points, loss +{loss_increase[name]:.3f}"
        )
    return sorted(rows, key=lambda row: row["map50_points_lost"], reverse=True)


def _pool_size(pool: Path) -> int:
    """Frames of the complete pool of the training seed at `pool`, or 0."""
    from benchmarks.frame_pool import COMPLETE

    try:
        marker = json.loads((pool / COMPLETE).read_text())
    except (OSError, ValueError):
        return 0
    return marker["frames"] if marker.get("seed") == TRAINING_SEED else 0


def _append(path: Path, line: str) -> None:
    with open(path, "a") as file:  # one short write per line: O_APPEND keeps lines of several processes whole
        file.write(line + "\n")


def validation_frames(frames_per_condition: int, workers: int = 1) -> list:
    """Held-out frames that the benchmark never scores (seeds from VALIDATION_OFFSET of each condition up).

    Settings are chosen on these, so that the benchmark's own held-out frames stay a test set.
    """
    from smartpark.evaluate import heldout_frames

    return heldout_frames(frames_per_condition, first=VALIDATION_OFFSET, workers=workers)


def _extras_path(pool: Path, validation_per_condition: int) -> Path:
    return pool / f"frames-heldout{HELDOUT_FRAMES_PER_CONDITION}-validation{validation_per_condition}.pkl"


def prepare(out: Path, pool: Path, frames: int, workers: int, validation_per_condition: int, log) -> None:
    """Render the training pool, the held-out, validation and calibration frames once for all experiments,
    and score the fp32 detector on them."""
    import numpy as np

    from benchmarks.frame_pool import render_pool
    from smartpark.detector import load_detector
    from smartpark.evaluate import evaluate_detector, heldout_frames
    from smartpark.scenes import render_training_sample

    started = time.perf_counter()
    render_pool(pool, TRAINING_SEED, frames, workers, log=log)
    log(f"pool of {frames} frames in {time.perf_counter() - started:.0f} s")
    extras = _extras_path(pool, validation_per_condition)
    if extras.exists():
        return
    heldout = heldout_frames(HELDOUT_FRAMES_PER_CONDITION, workers=workers)
    validation = validation_frames(validation_per_condition, workers)
    model = load_detector().eval()
    frame_sets = {
        "heldout": heldout,
        "validation": validation,
        "calibration": np.stack(
            [render_training_sample(TRAINING_SEED * 10_000_000 + 5_000_000 + i).image for i in range(32)]
        ),
        # The float detector on the same frames, scored once here: every result row carries it as its baseline.
        "fp32_map50": evaluate_detector(model, heldout)["overall"]["mAP50"],
        "fp32_validation_map50": evaluate_detector(model, validation)["overall"]["mAP50"],
    }
    extras.write_bytes(pickle.dumps(frame_sets))


def run_experiment(
    name: str,
    experiment: Experiment,
    pool: Path,
    device: str,
    out: Path,
    log,
    threads: int = 2,
    validation_per_condition: int = VALIDATION_FRAMES_PER_CONDITION,
) -> dict:
    import torch
    from torch.utils.data import DataLoader, Subset

    from benchmarks.compression import OrtDetector, _detector_loss
    from benchmarks.frame_pool import PoolDataset
    from compression.admm import AdmmQuantConfig, quantize_
    from compression.calibration import calibrate, reestimate_batch_norm_
    from compression.distillation import frozen_teacher, output_mse, with_distillation
    from compression.lowering import lower
    from compression.onnx_export import export_onnx
    from compression.pruning import PruneConfig, prune_
    from model_store.serialization import to_bytes
    from smartpark.detector import DISTILLATION_FEATURES, load_detector, preprocess
    from smartpark.evaluate import evaluate_detector
    from smartpark.train import centernet_distillation_loss

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    # prepare() wrote it, in our pool
    extras = pickle.loads(_extras_path(pool, validation_per_condition).read_bytes())  # noqa: S301
    frames, validation, calibration_images = extras["heldout"], extras["validation"], extras["calibration"]
    calibration = [preprocess(calibration_images[i : i + 8]) for i in range(0, len(calibration_images), 8)]
    model = load_detector(experiment.checkpoint).to(device, memory_format=torch.channels_last)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    if experiment.checkpoint is not None:
        # prepare() scored the shipped detector; this one is its own baseline.
        float_model = copy.deepcopy(model).cpu().eval()
        extras["fp32_map50"] = evaluate_detector(float_model, frames)["overall"]["mAP50"]
        extras["fp32_validation_map50"] = evaluate_detector(float_model, validation)["overall"]["mAP50"]
        log(f"{name}: fp32 mAP@0.5 {extras['fp32_validation_map50']:.4f} (validation), {extras['fp32_map50']:.4f}")
    loss_fn = _detector_loss
    if experiment.distillation_weight or experiment.feature_distillation_weight:
        loss_fn = with_distillation(
            loss_fn,
            frozen_teacher(copy.deepcopy(model)),
            experiment.distillation_weight,
            output_loss={"logits": output_mse, "centernet": centernet_distillation_loss}[
                experiment.output_distillation
            ],
            feature_layers=DISTILLATION_FEATURES,
            feature_weight=experiment.feature_distillation_weight,
        )
    dataset = PoolDataset(pool)
    if experiment.pool_offset:
        order = [(experiment.pool_offset + i) % len(dataset) for i in range(len(dataset))]
        dataset = Subset(dataset, order)
    data = DataLoader(dataset, batch_size=experiment.batch_size, shuffle=False, pin_memory=device == "cuda")
    result = {
        "name": name,
        **asdict(experiment),
        "heldout_frames": len(frames),
        "validation_frames": len(validation),
        "fp32_map50": extras["fp32_map50"],
        "fp32_validation_map50": extras["fp32_validation_map50"],
    }
    started = time.perf_counter()

    def progress(p) -> None:
        if p.step % 300 == 0 or p.step == p.total:
            log(f"{name}: {p.phase} {p.step}/{p.total} loss {p.loss} ({time.perf_counter() - started:.0f} s)")

    if experiment.sparsity:
        pruning = PruneConfig(
            target_sparsity=experiment.sparsity,
            pruning_steps=experiment.pruning_steps,
            finetune_steps_per_pruning_step=experiment.steps_per_cut,
            learning_rate=experiment.pruning_learning_rate,
            scope=experiment.pruning_scope,
        )
        prune_(model, pruning, data=data, loss_fn=loss_fn, progress=progress)
        pruned = copy.deepcopy(model).cpu().eval()
        result["pruned_float_map50"] = evaluate_detector(pruned, frames)["overall"]["mAP50"]
        log(f"{name}: pruned float mAP@0.5 {result['pruned_float_map50']:.4f}")
    settings = admm_settings(experiment)
    for codebook, admm_steps, finetune_steps in experiment.warm_start:
        warm = AdmmQuantConfig(codebook=codebook, admm_steps=admm_steps, finetune_steps=finetune_steps, **settings)
        quantize_(model, warm, data=data, loss_fn=loss_fn, progress=progress)
        log(f"{name}: warm start on {codebook} done ({time.perf_counter() - started:.0f} s)")
    quantization = AdmmQuantConfig(
        codebook=experiment.codebook,
        admm_steps=experiment.admm_steps,
        finetune_steps=experiment.finetune_steps,
        **settings,
    )
    report = quantize_(model, quantization, data=data, loss_fn=loss_fn, progress=progress)
    result["train_seconds"] = round(time.perf_counter() - started, 1)
    if experiment.sensitive:
        result["sensitive_layers"] = [
            layer.name for layer in report.layers if str(layer.codebook) == experiment.sensitive[0]
        ]

    def score(model, stage: str) -> None:
        """Fake-quantized float mAP, then the integer model's (ONNX Runtime) on both frame sets, appended."""
        model = model.cpu().eval()
        result["fake_quant_map50"] = evaluate_detector(model, frames)["overall"]["mAP50"]
        integer_model = lower(model, (1, 3, 240, 320), calibrate(model, calibration))
        result["compression_ratio"] = fp32_bytes / len(to_bytes(integer_model))
        detector = OrtDetector(export_onnx(integer_model), True)
        evaluation = evaluate_detector(detector, frames)["overall"]
        result["map50"], result["map"] = evaluation["mAP50"], evaluation["mAP"]
        result["validation_map50"] = evaluate_detector(detector, validation)["overall"]["mAP50"]
        log(
            f"{name} ({stage}): int8 mAP@0.5 {result['validation_map50']:.4f} on validation frames, "
            f"{result['map50']:.4f} on the benchmark's (fake-quantized {result['fake_quant_map50']:.4f}), "
            f"ratio {result['compression_ratio']:.1f}x"
        )
        _append(out / "results.jsonl", json.dumps({**result, "stage": stage}))

    if experiment.bn_reestimation_batches:
        score(copy.deepcopy(model), "integer, training's batch-norm statistics")
        # The statistics need the student's forward pass only: the plain loss, no teacher.
        reestimate_batch_norm_(model, data, _detector_loss, experiment.bn_reestimation_batches)
    score(model, "integer")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device of the training (cpu, cuda)")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.jsonl and log.txt")
    parser.add_argument("--pool", type=Path, default=Path("benchmarks/scratch/frame-pool"), help="frame pool folder")
    parser.add_argument("--only", nargs="*", choices=sorted(EXPERIMENTS), help="experiments to run (default all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count (smoke runs)")
    parser.add_argument(
        "--pool-frames", type=int, default=None, help="frames in the pool (default: what the longest run reads)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes rendering the pool")
    parser.add_argument(
        "--validation-frames", type=int, default=VALIDATION_FRAMES_PER_CONDITION, help="validation frames per condition"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads per experiment (default: CPUs / runs)")
    parser.add_argument(
        "--layer-sensitivity",
        metavar="CODEBOOK",
        help="instead of experiments: what CODEBOOK costs each layer of the fp32 detector alone (no training)",
    )
    parser.add_argument("--experiment", help=argparse.SUPPRESS)  # a child process runs this one experiment
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        _append(args.out / "log.txt", line)

    if args.layer_sensitivity:
        # The loss needs 8 batches: any pool already there will do (asking for another size would render it anew).
        frames = args.pool_frames or max(_pool_size(args.pool), 8 * BATCH_SIZE)
        prepare(args.out, args.pool, frames, args.workers, args.validation_frames, log)
        layer_sensitivity_table(args.layer_sensitivity, args.pool, args.out, args.validation_frames, log)
        return
    experiments = {name: EXPERIMENTS[name].scaled(args.scale) for name in (args.only or EXPERIMENTS)}
    threads = args.threads or max(1, (os.cpu_count() or 1) // len(experiments))
    if args.experiment:
        experiment = experiments[args.experiment]
        run_experiment(
            args.experiment, experiment, args.pool, args.device, args.out, log, threads, args.validation_frames
        )
        return
    frames = args.pool_frames or max(e.pool_frames for e in experiments.values())
    prepare(args.out, args.pool, frames, args.workers, args.validation_frames, log)
    children = {}
    for name in experiments:
        command = [sys.executable, "-m", "benchmarks.compression_sweep", "--experiment", name, "--device", args.device]
        command += ["--out", str(args.out), "--pool", str(args.pool), "--scale", str(args.scale)]
        command += ["--threads", str(threads), "--validation-frames", str(args.validation_frames)]
        children[name] = subprocess.Popen(command)
    failed = [name for name, child in children.items() if child.wait() != 0]
    if failed:
        log(f"failed: {failed}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
