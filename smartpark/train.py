"""Train the smart-park detector on synthetic parking-lot frames rendered on the fly.

    python -m smartpark.train [--steps N] [--minutes M] [--batch-size B] [--out PATH]

Every training frame is new (seeds below `smartpark.scenes.HELDOUT_SEED_BASE`), so there is no
epoch and no overfitting to watch; the run is seeded and follows a fixed seed schedule. The
defaults are what produced the shipped checkpoint, smartpark/checkpoints/detector.pt; its
companion detector.json records how.
"""

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from smartpark.decode import OUTPUT_STRIDE, encode_targets
from smartpark.detector import (
    DEFAULT_CHECKPOINT,
    CenterNetDetector,
    Checkpoint,
    DetectorConfig,
    check_widening,
    count_macs,
    detector_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
    widen,
)

# Seeds of training frames: seed * SEEDS_PER_RUN + index, all far below the held-out seeds.
SEEDS_PER_RUN = 10_000_000


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), from /proc/cpuinfo on Linux."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    steps: int = 8_000  # ~50 min at the ~43 images/s of two idle EPYC cores with AVX512-BF16
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 300
    # CenterNet weights the regression terms against the focal loss; log-size is O(1), so no 0.1 here.
    size_weight: float = 1.0
    offset_weight: float = 1.0
    # GIoU of the box at each centre: unlike the L1 terms it weighs a pixel of error on a small person more.
    giou_weight: float = 2.0
    # bfloat16 autocast runs the convolutions ~1.6x faster on CPUs with AVX512-BF16 or AMX (weights stay
    # fp32), but ~10x slower on AVX2-only CPUs, where it is emulated: on by default only where it helps.
    bf16: bool = field(default_factory=lambda: cpu_has_native_bf16())
    minutes: float = 55.0  # wall budget for the whole run; steps are cut (and the schedule with them) to fit
    threads: int = 1
    workers: int = 1
    log_every: int = 100


class SceneTargets(Dataset):
    """Frame `index` of a run: rendered from its own seed, flipped or not by that seed, encoded as targets."""

    def __init__(self, seed: int, length: int):
        self.seed_base = seed * SEEDS_PER_RUN
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        from smartpark.scenes import HELDOUT_SEED_BASE, render_training_sample

        seed = self.seed_base + index
        if seed >= HELDOUT_SEED_BASE:
            raise ValueError(f"training seed {seed} would reach the held-out scenes; use a smaller --seed")
        sample = render_training_sample(seed)
        image, boxes = sample.image, np.asarray(sample.boxes, np.float32).reshape(-1, 4)
        if np.random.default_rng(seed).random() < 0.5:
            width = image.shape[1]
            image = image[:, ::-1]
            boxes = np.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=1)
        height, width = image.shape[:2]
        targets = encode_targets(boxes, sample.labels, sample.ignore, (height // OUTPUT_STRIDE, width // OUTPUT_STRIDE))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),  # uint8: 4x less to pickle
            **{name: torch.from_numpy(value) for name, value in asdict(targets).items()},
        }


def centernet_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    targets: dict[str, torch.Tensor],
    size_weight: float = TrainConfig.size_weight,
    offset_weight: float = TrainConfig.offset_weight,
    giou_weight: float = TrainConfig.giou_weight,
) -> tuple[torch.Tensor, dict[str, float]]:
    """CenterNet's penalty-reduced focal loss on the heatmap, L1 on log-size and offset, GIoU of the box at centres."""
    heatmap_logits, log_size, center_offset = (output.float() for output in outputs)
    heatmap, weight = targets["heatmap"], targets["heatmap_weight"]
    positive = (heatmap >= 1.0).float()
    # log-sigmoid instead of log(sigmoid): no clamping, no NaN for confident logits.
    log_p, log_not_p = F.logsigmoid(heatmap_logits), F.logsigmoid(-heatmap_logits)
    p = log_p.exp()
    positive_loss = -(log_p * (1 - p) ** 2 * positive).sum()
    negative_loss = -(log_not_p * p**2 * (1 - heatmap) ** 4 * (1 - positive) * weight).sum()
    num_positive = positive.sum().clamp(min=1.0)
    focal = (positive_loss + negative_loss) / num_positive

    mask = targets["box_weight"].unsqueeze(1)
    num_boxes = mask.sum().clamp(min=1.0)  # each object's weights sum to 1
    size = (F.l1_loss(log_size, targets["log_size"], reduction="none") * mask).sum() / num_boxes
    offset = (F.l1_loss(center_offset, targets["center_offset"], reduction="none") * mask).sum() / num_boxes
    giou = ((1 - _giou(log_size, center_offset, targets["log_size"], targets["center_offset"])) * mask[:, 0]).sum()
    giou = giou / num_boxes
    total = focal + size_weight * size + offset_weight * offset + giou_weight * giou
    return total, {"focal": focal.item(), "size": size.item(), "offset": offset.item(), "giou": giou.item()}


def centernet_distillation_loss(
    student: tuple[torch.Tensor, torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """The gap between a compressed detector's outputs and its float teacher's, where the outputs mean something.

    Matching raw outputs everywhere (compression.distillation.output_mse) spends the student's few bits on
    the teacher's background logits and on its sizes and offsets at cells with no object, which decoding
    never reads. Here the heatmaps are compared as probabilities (a background cell at p = 0.001 or
    0.0001 costs nothing), normalized by the teacher's total mass (about the objects' count, as the
    focal loss normalizes), and sizes and offsets by L1 weighted by the teacher's peak probability per cell.
    """
    student_heatmap, student_size, student_offset = (output.float() for output in student)
    teacher_heatmap, teacher_size, teacher_offset = (output.float() for output in teacher)
    teacher_p = torch.sigmoid(teacher_heatmap)
    heatmap = ((torch.sigmoid(student_heatmap) - teacher_p) ** 2).sum() / teacher_p.sum().clamp(min=1.0)
    weight = teacher_p.amax(dim=1, keepdim=True)
    box_gap = (student_size - teacher_size).abs() + (student_offset - teacher_offset).abs()
    return heatmap + (weight * box_gap).sum() / weight.sum().clamp(min=1.0)


def _giou(log_size, center_offset, target_log_size, target_offset) -> torch.Tensor:
    """Generalized IoU per cell of the predicted and the target box, both relative to that cell."""

    def corners(log_size, offset):
        half = log_size.clamp(max=8.0).exp() / 2
        return offset - half, offset + half  # (B, 2, h, w) each: x1 y1, x2 y2

    low, high = corners(log_size, center_offset)
    target_low, target_high = corners(target_log_size, target_offset)
    inter = (torch.minimum(high, target_high) - torch.maximum(low, target_low)).clamp(min=0).prod(dim=1)
    area, target_area = (high - low).prod(dim=1), (target_high - target_low).prod(dim=1)
    union = area + target_area - inter
    hull = (torch.maximum(high, target_high) - torch.minimum(low, target_low)).prod(dim=1)
    return inter / union - (hull - union) / hull


def _warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1 + math.cos(math.pi * progress))


def _single_threaded_worker(_worker_id: int) -> None:
    # One core renders, the other trains: thread pools in the renderer would only fight the training.
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def _to_training_input(images: torch.Tensor) -> torch.Tensor:
    """detector.preprocess for a (B, 3, H, W) uint8 batch, in the memory layout that trains fastest on CPU."""
    return images.float().div_(255.0).contiguous(memory_format=torch.channels_last)


def train(
    config: TrainConfig,
    detector_config: DetectorConfig | None = None,
    out: Path | str | None = DEFAULT_CHECKPOINT,
    dataset: Dataset | None = None,
    log=print,
    command: str | None = None,
    initial: Checkpoint | None = None,
) -> tuple[CenterNetDetector, dict]:
    """Train a detector; write it to `out` (unless None) with a JSON record beside it. Returns (model, record).

    With `initial` (a loaded checkpoint), training goes on from its weights instead of a fresh
    initialization, widened to `detector_config` where that is wider (`smartpark.detector.widen`: the
    same function to start with); the record keeps the initial checkpoint's own record.
    """
    started = time.time()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    if initial is None:
        model = CenterNetDetector(detector_config)
    else:
        model = widen(detector_from_checkpoint(initial), detector_config or initial.config)
    model = model.to(memory_format=torch.channels_last)
    model.train()
    dataset = dataset if dataset is not None else SceneTargets(config.seed, config.steps * config.batch_size)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=False,  # the order is the seed schedule
        num_workers=config.workers,
        worker_init_fn=_single_threaded_worker if config.workers else None,
        persistent_workers=config.workers > 0,
        prefetch_factor=4 if config.workers else None,
        drop_last=True,
    )
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN and biases
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    total_steps = config.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_cosine(step, config.warmup_steps, total_steps)
    )
    budget_s = config.minutes * 60
    reserve_s = 30.0  # for writing the checkpoint, and one slow stretch between two re-plans
    running: dict[str, float] = {}
    losses: list[float] = []
    log_start, log_step = time.time(), 0
    step = 0
    for step, batch in enumerate(loader):
        if step >= total_steps:
            break
        images = _to_training_input(batch.pop("image"))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            outputs = model(images)
        loss, parts = centernet_loss(outputs, batch, config.size_weight, config.offset_weight, config.giou_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower --lr")
        losses.append(loss.item())
        for name, value in {"loss": loss.item(), **parts}.items():
            running[name] = running.get(name, 0.0) + value
        if (step + 1) % config.log_every == 0 or step + 1 == total_steps:
            now = time.time()
            count = step + 1 - log_step
            images_per_s = count * config.batch_size / (now - log_start)
            # Re-plan with the speed just measured: on a machine busier than expected the run (and its
            # cosine schedule) gets shorter instead of overrunning the wall budget.
            affordable = step + 1 + int((budget_s - reserve_s - (now - started)) * count / (now - log_start))
            if affordable < total_steps:
                log(f"only {affordable} of {total_steps} steps fit in {config.minutes} min at {images_per_s:.1f} img/s")
                total_steps = max(affordable, step + 1)
            eta = (total_steps - step - 1) * config.batch_size / images_per_s
            averages = " ".join(f"{name} {value / count:.4f}" for name, value in running.items())
            log(
                f"step {step + 1}/{total_steps} {averages} lr {scheduler.get_last_lr()[0]:.2e} "
                f"{images_per_s:.1f} img/s eta {eta / 60:.1f} min"
            )
            running, log_start, log_step = {}, now, step + 1
        if time.time() - started > budget_s:
            log(f"stopping at step {step + 1}: the {config.minutes} min budget is spent")
            break
    steps_run = min(step + 1, total_steps)
    model.eval()
    record = {
        "seed": config.seed,
        "steps": steps_run,
        "steps_requested": config.steps,
        "images_seen": steps_run * config.batch_size,
        "training_seeds": [dataset.seed_base, dataset.seed_base + steps_run * config.batch_size]
        if isinstance(dataset, SceneTargets)
        else None,
        "wall_time_s": round(time.time() - started, 1),
        "final_loss": round(float(np.mean(losses[-config.log_every :])), 4) if losses else None,
        "train_config": asdict(config),
        "architecture": {
            **asdict(model.config),
            "macs_320x240": count_macs(model, (1, 3, 240, 320)),
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "machine": {
            "platform": platform.platform(),
            "processor": _cpu_name(),
            "cpus": os.cpu_count(),
            "torch": str(torch.__version__),
            "python": platform.python_version(),
        },
        "command": command,
    }
    if initial is not None:
        # What the run started from: that checkpoint's own record, its training included.
        record["initialized_from"] = initial.metadata or {"architecture": asdict(initial.config)}
    if out is not None:
        out = Path(out)
        save_checkpoint(model, out, metadata=record)
        json_path = out.with_suffix(".json")
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(json_path)
        log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {json_path}")
    return model, record


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _channels(text: str) -> tuple[int, ...]:
    """Parse a width option: "48,64,128" gives (48, 64, 128)."""
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated channel counts, got {text!r}") from None
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"channel counts must be positive, got {text!r}")
    return widths


def main(argv: list[str] | None = None) -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--minutes", type=float, default=defaults.minutes, help="wall budget for the whole run")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="data-rendering processes")
    parser.add_argument("--threads", type=int, default=defaults.threads, help="torch threads of the main process")
    parser.add_argument(
        "--no-bf16", action="store_true", help="train in fp32 even on a CPU with native bfloat16 (AVX512-BF16, AMX)"
    )
    parser.add_argument(
        "--init",
        type=Path,
        metavar="CHECKPOINT",
        help="train on from this checkpoint's weights (widened to the widths below where they are wider)",
    )
    default = DetectorConfig()
    for option, widths, what in (
        ("--stage-channels", default.stage_channels, "the stride-4, -8 and -16 stages"),
        ("--neck-channels", default.neck_channels, "the stride-4 and -8 levels of the top-down path"),
    ):
        shipped = ",".join(map(str, widths))
        parser.add_argument(
            option, type=_channels, help=f"widths of {what}, comma-separated (default: --init's, else {shipped})"
        )
    parser.add_argument(
        "--head-channels",
        type=int,
        help=f"width of the heads' hidden layers (default: --init's, else {default.head_channels})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_CHECKPOINT)
    args = parser.parse_args(argv)
    initial = None
    if args.init is not None:
        if not args.init.exists():
            parser.error(f"--init: no checkpoint at {args.init}")
        initial = load_checkpoint(args.init)
    base = initial.config if initial is not None else default
    widths = {
        "stage_channels": args.stage_channels,
        "neck_channels": args.neck_channels,
        "head_channels": args.head_channels,
    }
    try:
        detector_config = replace(base, **{name: value for name, value in widths.items() if value is not None})
        if initial is not None:
            # Refuse a narrower or deeper config now, not after the data loader has started.
            check_widening(initial.config, detector_config)
    except ValueError as error:
        parser.error(str(error))
    config = TrainConfig(
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        minutes=args.minutes,
        threads=args.threads,
        workers=args.workers,
        bf16=cpu_has_native_bf16() and not args.no_bf16,
    )
    command = shlex.join(["python", "-m", "smartpark.train", *(sys.argv[1:] if argv is None else argv)])
    train(
        config,
        detector_config,
        out=args.out,
        log=lambda line: print(line, flush=True),
        command=command,
        initial=initial,
    )


if __name__ == "__main__":
    main()
