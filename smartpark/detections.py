"""Detector output in image pixels: what decode produces and what the tracker consumes."""

from dataclasses import dataclass

import numpy as np

LABELS = ("vehicle", "person")
VEHICLE, PERSON = 0, 1


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4) float32, x1 y1 x2 y2 in pixels of the frame
    scores: np.ndarray  # (N,) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64, indexes into LABELS

    def __post_init__(self):
        n = len(self.scores)
        if self.boxes.shape != (n, 4) or self.labels.shape != (n,):
            raise ValueError(f"inconsistent detections: boxes {self.boxes.shape}, labels {self.labels.shape}, n={n}")

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    @classmethod
    def from_arrays(cls, boxes, scores, labels) -> "Detections":
        return cls(
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(scores, np.float32).reshape(-1),
            np.asarray(labels, np.int64).reshape(-1),
        )

    def select(self, mask) -> "Detections":
        return Detections(self.boxes[mask], self.scores[mask], self.labels[mask])
