"""Export annotated frames as a COCO detection dataset (images written as JPEG beside the JSON)."""

import json
from collections.abc import Iterable
from pathlib import Path

import cv2

from smartpark.detections import LABELS


def export_coco(frames: Iterable, path) -> dict:
    """Write ``path`` (COCO JSON) and the frames' images into ``<path stem>_images/``; returns the dict."""
    path = Path(path)
    image_dir = path.with_name(path.stem + "_images")
    image_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for image_id, frame in enumerate(frames, start=1):
        name = f"{frame.seed}.jpg"
        cv2.imwrite(str(image_dir / name), frame.image[:, :, ::-1])
        height, width = frame.image.shape[:2]
        images.append({"id": image_id, "file_name": f"{image_dir.name}/{name}", "width": width, "height": height,
                       "condition": frame.condition, "seed": frame.seed})  # fmt: skip
        for box, label, ignore in zip(frame.boxes, frame.labels, frame.ignore, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": int(bool(ignore)),
            })  # fmt: skip
    dataset = {
        "info": {"description": "smartpark synthetic scenes"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(LABELS)],
    }
    path.write_text(json.dumps(dataset))
    return dataset
