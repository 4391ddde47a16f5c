"""Smart-park vision end to end: does the detector find vehicles and people, and do the rules fire?

Two measurements on scenes no training run has seen (seeds from ``HELDOUT_SEED_BASE``):

1. The fp32 detector's COCO mAP@0.5 and mAP@[.5:.95] per class and per condition (day, dusk,
   night, rain), on ``smartpark.evaluate``'s held-out frames.
2. Detector + tracker + rules on scripted 60 s sequences at 5 fps, their events matched to each
   sequence's ground-truth log (``smartpark.metrics``, 5 s tolerance): precision, recall and timing
   error per rule, and line counts against the truth. The baseline is the same tracker and rules
   fed the true boxes of every visible object (jittered by 0.7 px), run in the same process on the
   same frames: it shows what the rules and the ground truth agree on, so the gap between the two
   is what the detector costs.
"""

import time
from dataclasses import replace

import numpy as np

from benchmarks.harness import Comparison, Options, Result, Table

# What the issue asks of the smart-park pipeline (issue #3).
TARGETS = {
    "vehicle_ap50": 0.90,
    "person_ap50": 0.80,
    "occupancy": 0.95,
    "fire_lane": 0.95,
    "intrusion": 0.90,
    "off_duty": 0.90,
    "inactivity": 0.90,
    "timing_s": 2.0,
    "line_count_error": 0.05,
}
FPS = 5.0
SEQUENCE_SEED_OFFSET = 10_000  # held-out sequences: heldout_seed(10_000 + i), apart from the frame seeds


def _run_sequences(model, count: int) -> dict:
    from smartpark.analytics import SceneAnalytics
    from smartpark.detections import Detections
    from smartpark.detector import detect
    from smartpark.metrics import count_errors, score_events
    from smartpark.scenes import heldout_seed
    from smartpark.scenes.sequences import generate_sequence

    predicted, oracle, truth = [], [], []
    jitter = np.random.default_rng(0)
    frames = 0
    detector_s = analytics_s = 0.0
    conditions: dict[str, int] = {}
    for index in range(count):
        sequence = generate_sequence(heldout_seed(SEQUENCE_SEED_OFFSET + index), duration_s=60.0, fps=FPS)
        conditions[sequence.condition] = conditions.get(sequence.condition, 0) + 1
        camera = f"sequence-{index}"
        with_detector = SceneAnalytics(sequence.config, clock_start=sequence.clock_start)
        with_truth = SceneAnalytics(sequence.config, clock_start=sequence.clock_start)
        events, oracle_events = [], []
        for frame in sequence.frames():
            started = time.perf_counter()
            found = detect(model, frame.image[None])[0]
            detector_s += time.perf_counter() - started
            started = time.perf_counter()
            events += with_detector.update(frame.t, found)
            analytics_s += time.perf_counter() - started
            visible = ~frame.ignore
            boxes = frame.boxes[visible] + jitter.normal(0, 0.7, frame.boxes[visible].shape)
            true_boxes = Detections.from_arrays(boxes, np.full(visible.sum(), 0.9), frame.labels[visible])
            oracle_events += with_truth.update(frame.t, true_boxes)
            frames += 1
        events += with_detector.finish(sequence.duration_s)
        oracle_events += with_truth.finish(sequence.duration_s)
        predicted += [replace(e, camera=camera) for e in events]
        oracle += [replace(e, camera=camera) for e in oracle_events]
        truth += [replace(e, camera=camera) for e in sequence.events]
    return {
        "sequences": count,
        "frames": frames,
        "conditions": conditions,
        "detector_ms_per_frame": 1000 * detector_s / frames,
        "analytics_ms_per_frame": 1000 * analytics_s / frames,
        "detector": score_events(predicted, truth, tolerance_s=5.0),
        "oracle": score_events(oracle, truth, tolerance_s=5.0),
        "counts_detector": count_errors(predicted, truth),
        "counts_oracle": count_errors(oracle, truth),
    }


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _rules_table(pipeline: dict) -> str:
    lines = [
        "| rule | truth events | precision | recall | start error mean / max (s) | end error mean / max (s) "
        "| with true boxes: precision | recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rule, stats in pipeline["detector"]["per_rule"].items():
        truth = stats["tp"] + stats["fn"]
        oracle = pipeline["oracle"]["per_rule"][rule]
        lines.append(
            f"| {rule} | {truth} | {_fmt(stats['precision'])} | {_fmt(stats['recall'])} | "
            f"{_fmt(stats['start_error_mean_s'], 1)} / {_fmt(stats['start_error_max_s'], 1)} | "
            f"{_fmt(stats['end_error_mean_s'], 1)} / {_fmt(stats['end_error_max_s'], 1)} | "
            f"{_fmt(oracle['precision'])} | {_fmt(oracle['recall'])} |"
        )
    counts = pipeline["counts_detector"]["overall"]
    lines.append("")
    lines.append(
        f"Line counts: {counts['predicted']} counted against {counts['truth']} true crossings "
        f"(error {100 * counts['relative_error']:.1f} %); with true boxes "
        f"{pipeline['counts_oracle']['overall']['predicted']} "
        f"({100 * pipeline['counts_oracle']['overall']['relative_error']:.1f} %)."
    )
    return "\n".join(lines)


def _target_lines(detector: dict, pipeline: dict) -> list[str]:
    overall = detector["overall"]
    verdicts = [
        ("vehicle mAP@0.5", overall["vehicle"]["AP50"], TARGETS["vehicle_ap50"], ">="),
        ("person mAP@0.5", overall["person"]["AP50"], TARGETS["person_ap50"], ">="),
    ]
    for rule in ("occupancy", "fire_lane", "intrusion", "off_duty", "inactivity"):
        stats = pipeline["detector"]["per_rule"][rule]
        for metric in ("precision", "recall"):
            verdicts.append((f"{rule} {metric}", stats[metric], TARGETS[rule], ">="))
    for rule in ("occupancy", "fire_lane"):
        verdicts.append(
            (f"{rule} mean start error (s)", pipeline["detector"]["per_rule"][rule]["start_error_mean_s"],
             TARGETS["timing_s"], "<=")
        )  # fmt: skip
    count_error = pipeline["counts_detector"]["overall"]["relative_error"]
    verdicts.append(("line count error", count_error, TARGETS["line_count_error"], "<="))
    lines = ["| target | measured | required | met |", "|---|---:|---:|:---:|"]
    for name, value, required, op in verdicts:
        met = value is not None and (value >= required if op == ">=" else value <= required)
        lines.append(f"| {name} | {_fmt(value)} | {op} {required:g} | {'yes' if met else '**no**'} |")
    return lines


def run(options: Options) -> Result:
    import torch

    from smartpark.detector import load_detector
    from smartpark.evaluate import evaluate_detector, heldout_frames, markdown_table

    torch.set_num_threads(2)
    frames_per_condition = 40 if options.quick else 200
    sequences = 3 if options.quick else 40
    model = load_detector()

    frames = heldout_frames(frames_per_condition)
    detector = evaluate_detector(model, frames)
    started = time.perf_counter()
    pipeline = _run_sequences(model, sequences)
    pipeline_s = time.perf_counter() - started

    throughput = Table(
        "detector + tracker + rules",
        "tracker + rules alone",
        [
            Comparison(
                "time per frame (lower is better)",
                pipeline["detector_ms_per_frame"] + pipeline["analytics_ms_per_frame"],
                pipeline["analytics_ms_per_frame"],
                unit="ms",
            )
        ],
        title="Cost per frame, fp32 torch on 2 threads",
    )
    return Result(
        title="smart-park detector and rules on held-out scenes",
        description=__doc__.split("\n\n", 1)[1],
        tables=[throughput],
        markdown=[
            f"**Detector, {detector['frames']} held-out frames ({frames_per_condition} per condition)**\n\n"
            + markdown_table(detector),
            f"**Rules, {sequences} held-out sequences of 60 s at {FPS:g} fps ({pipeline['frames']} frames; "
            f"conditions {pipeline['conditions']})**\n\n" + _rules_table(pipeline),
            "**Targets (issue #3)**\n\n" + "\n".join(_target_lines(detector, pipeline)),
        ],
        notes=[
            f"Sequences took {pipeline_s:.0f} s in all (rendering included).",
            "Reproduce with `.venv/bin/python -m benchmarks smartpark` (part of `make bench`); the detector is "
            "the shipped checkpoint `smartpark/checkpoints/detector.pt`.",
        ],
        details={"detector": detector, "pipeline": pipeline, "targets": TARGETS},
    )
