"""``python -m smartpark.scenes``: write synthetic frames as a COCO dataset, or a sequence with its event log."""

import argparse
import json
import sys
from pathlib import Path

import cv2

from smartpark.scenes import CONDITIONS, export_coco, heldout_seed, render_training_sample
from smartpark.scenes.sequences import generate_sequence


def _coco(args) -> None:
    first = heldout_seed(args.start) if args.heldout else args.start
    frames = (render_training_sample(first + i, args.condition) for i in range(args.frames))
    dataset = export_coco(frames, args.out)
    print(f"wrote {args.out}: {len(dataset['images'])} images, {len(dataset['annotations'])} boxes")


def _sequence(args) -> None:
    sequence = generate_sequence(args.seed, duration_s=args.duration, fps=args.fps, condition=args.condition)
    args.out.mkdir(parents=True, exist_ok=True)
    video = cv2.VideoWriter(
        str(args.out / "frames.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), sequence.fps,
        (sequence.config.width, sequence.config.height),
    )  # fmt: skip
    boxes = []
    for frame in sequence.frames():
        video.write(frame.image[:, :, ::-1])
        boxes.append({
            "t": frame.t, "boxes": frame.boxes.tolist(), "labels": frame.labels.tolist(),
            "ignore": frame.ignore.tolist(), "track_ids": frame.track_ids.tolist(),
        })  # fmt: skip
    video.release()
    (args.out / "scene.json").write_text(json.dumps(sequence.config.to_dict(), indent=2))
    (args.out / "events.json").write_text(json.dumps([e.to_dict() for e in sequence.events], indent=2))
    (args.out / "boxes.json").write_text(json.dumps(boxes))
    meta = {"seed": sequence.seed, "condition": sequence.condition, "fps": sequence.fps,
            "duration_s": sequence.duration_s, "clock_start": sequence.clock_start.isoformat()}  # fmt: skip
    (args.out / "sequence.json").write_text(json.dumps(meta, indent=2))
    print(f"wrote {args.out}: frames.mp4, scene.json, events.json ({len(sequence.events)} events), boxes.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m smartpark.scenes", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    coco = commands.add_parser("coco", help="annotated single frames as a COCO dataset (JSON + JPEG folder)")
    coco.add_argument("out", type=Path, help="the COCO JSON to write; images go to <name>_images/ beside it")
    coco.add_argument("--frames", type=int, default=100)
    coco.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    coco.add_argument("--heldout", action="store_true", help="use held-out seeds (never used in training)")
    coco.add_argument("--condition", choices=CONDITIONS, default=None, help="default: random per frame")
    sequence = commands.add_parser("sequence", help="a scripted sequence: video, scene config, event log, boxes")
    sequence.add_argument("seed", type=int)
    sequence.add_argument("out", type=Path, help="a folder")
    sequence.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    sequence.add_argument("--fps", type=float, default=5.0)
    sequence.add_argument("--condition", choices=CONDITIONS, default=None)
    args = parser.parse_args(argv)
    {"coco": _coco, "sequence": _sequence}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
