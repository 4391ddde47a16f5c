"""Score a detector on held-out synthetic frames: COCO mAP@0.5 and mAP@[.5:.95], per class and condition.

    python -m smartpark.evaluate [--checkpoint PATH] [--frames-per-condition N] [--json OUT]

`evaluate_detector` takes any callable from (B, H, W, 3) uint8 frames to a list of Detections, so the
int8 runtimes and the FPGA simulator are scored exactly like the fp32 torch model.
"""

import argparse
import contextlib
import io
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from smartpark.detections import LABELS, Detections

# Well below the scores that count on the device: mAP integrates over the whole precision-recall curve.
EVAL_SCORE_THRESHOLD = 0.01
# Held-out frames of condition k use heldout_seed(k * SEEDS_PER_CONDITION + i), stable whatever N is.
SEEDS_PER_CONDITION = 1_000_000

Detector = Callable[[np.ndarray], list[Detections]]


def heldout_frames(
    frames_per_condition: int, conditions: Sequence[str] | None = None, first: int = 0, workers: int = 1
) -> list:
    """Held-out frames (never trained on), the same ones on every call: N per condition, from held-out seed
    `first` of each condition on; `workers` > 1 renders them in that many processes."""
    from smartpark.scenes import CONDITIONS, heldout_seed, render_training_sample

    specs = [
        (heldout_seed(k * SEEDS_PER_CONDITION + first + i), condition)
        for k, condition in enumerate(CONDITIONS)
        if conditions is None or condition in conditions
        for i in range(frames_per_condition)
    ]
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            return pool.starmap(render_training_sample, specs, chunksize=16)
    return [render_training_sample(seed, condition) for seed, condition in specs]


def coco_ground_truth(frames: Sequence) -> dict:
    """COCO dict of the frames' boxes; ignored objects are iscrowd=1, so they are neither misses nor false alarms."""
    images, annotations = [], []
    for image_id, frame in enumerate(frames, start=1):
        height, width = frame.image.shape[:2]
        images.append({"id": image_id, "width": width, "height": height, "condition": frame.condition})
        for box, label, ignore in zip(frame.boxes, frame.labels, frame.ignore, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(bool(ignore)),
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(LABELS)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _as_detector(model_or_callable) -> Detector:
    try:
        from torch import nn
    except ImportError:  # an agent-side runtime: no torch, and no torch model either
        return model_or_callable
    if isinstance(model_or_callable, nn.Module):
        from smartpark.detector import detect

        model = model_or_callable.eval()
        return lambda images: detect(model, images, score_threshold=EVAL_SCORE_THRESHOLD)
    return model_or_callable


def _average_precision(coco_gt, coco_dt, image_ids: list[int]) -> dict:
    """AP@0.5 and AP@[.5:.95] per class and their means over classes, for a subset of images."""
    from pycocotools.cocoeval import COCOeval

    evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
    evaluator.params.imgIds = image_ids
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress
        evaluator.evaluate()
        evaluator.accumulate()
    # precision: [iou thresholds, recall points, classes, area ranges, max dets]; -1 where a class has no objects.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    result = {}
    for k, name in enumerate(LABELS):
        at_50, over_ious = precision[0, :, k], precision[:, :, k]
        result[name] = {
            "AP50": float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else float("nan"),
            "AP": float(over_ious[over_ious > -1].mean()) if (over_ious > -1).any() else float("nan"),
        }
    result["mAP50"] = float(np.nanmean([result[name]["AP50"] for name in LABELS]))
    result["mAP"] = float(np.nanmean([result[name]["AP"] for name in LABELS]))
    return result


def evaluate_detector(model_or_callable, frames: Sequence, batch_size: int = 16) -> dict:
    """COCO metrics of a torch model or a callable images -> list[Detections] on annotated frames.

    Returns {"overall": {...}, "<condition>": {...}, "frames": n, "ms_per_frame": t}, where each
    {...} is {"vehicle": {"AP50", "AP"}, "person": {"AP50", "AP"}, "mAP50", "mAP"}.
    """
    from pycocotools.coco import COCO

    detector = _as_detector(model_or_callable)
    ground_truth = coco_ground_truth(frames)
    results = []
    started = time.perf_counter()
    for start in range(0, len(frames), batch_size):
        batch = frames[start : start + batch_size]
        detections = detector(np.stack([frame.image for frame in batch]))
        for image_id, found in enumerate(detections, start=start + 1):
            for box, score, label in zip(found.boxes, found.scores, found.labels, strict=True):
                x1, y1, x2, y2 = (float(v) for v in box)
                results.append(
                    {"image_id": image_id, "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                     "score": float(score)}
                )  # fmt: skip
    elapsed = time.perf_counter() - started

    coco_gt = COCO()
    coco_gt.dataset = ground_truth
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    report: dict = {"frames": len(frames), "ms_per_frame": round(1000 * elapsed / max(1, len(frames)), 2)}
    if not results:  # pycocotools refuses an empty result list; nothing found scores zero
        zero = {name: {"AP50": 0.0, "AP": 0.0} for name in LABELS} | {"mAP50": 0.0, "mAP": 0.0}
        conditions = sorted({frame.condition for frame in frames})
        return report | {"overall": zero} | dict.fromkeys(conditions, zero)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
    report["overall"] = _average_precision(coco_gt, coco_dt, [image["id"] for image in ground_truth["images"]])
    for condition in dict.fromkeys(frame.condition for frame in frames):
        ids = [image["id"] for image in ground_truth["images"] if image["condition"] == condition]
        report[condition] = _average_precision(coco_gt, coco_dt, ids)
    return report


def markdown_table(report: dict) -> str:
    rows = [key for key, value in report.items() if isinstance(value, dict) and key != "overall"] + ["overall"]
    header = "| condition | " + " | ".join(f"{name} AP50 | {name} AP" for name in LABELS) + " | mAP50 | mAP |"
    lines = [header, "|" + " --- |" * (2 * len(LABELS) + 3)]
    for row in rows:
        metrics = report[row]
        cells = [f"{metrics[name]['AP50']:.3f} | {metrics[name]['AP']:.3f}" for name in LABELS]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {metrics['mAP50']:.3f} | {metrics['mAP']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from smartpark.detector import DEFAULT_CHECKPOINT, load_detector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--frames-per-condition", type=int, default=200)
    parser.add_argument("--json", type=Path, help="also write the metrics here")
    args = parser.parse_args(argv)

    model = load_detector(args.checkpoint)
    frames = heldout_frames(args.frames_per_condition)
    report = evaluate_detector(model, frames)
    report["checkpoint"] = str(args.checkpoint)
    print(markdown_table(report))
    print(f"\n{report['frames']} held-out frames, {report['ms_per_frame']} ms/frame (torch fp32, decode included)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
