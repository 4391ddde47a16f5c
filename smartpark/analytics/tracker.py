"""Multi-object tracking in numpy: follows detections from frame to frame so rules can reason about one object.

ByteTrack-style association per class by IoU against each track's constant-velocity Kalman prediction:
high-score detections first, then low-score ones only to keep confirmed tracks alive. Track birth needs
`min_hits` consecutive matches; death comes `max_age` seconds after the last match, in seconds rather than
frames because camera frame rates vary.
"""

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from smartpark.detections import Detections

# Velocity uncertainty of a new track, in box heights per second: wide enough that the second match alone
# sets the speed of a car crossing the frame.
INITIAL_SPEED_STD = 2.0


@dataclass(frozen=True)
class TrackerParams:
    """How detections are associated into tracks. Scores are detector confidences, times are seconds."""

    high_score: float = 0.5  # detections at or above this are matched first and may start tracks
    low_score: float = 0.1  # detections in [low_score, high_score) only keep confirmed tracks alive
    match_iou: float = 0.3  # least IoU between a high-score detection and a track's predicted box
    low_match_iou: float = 0.5  # stricter for low-score detections, which are more often false
    min_hits: int = 3  # consecutive matches before a track is confirmed and reported
    max_age: float = 1.5  # seconds a confirmed track lives on unmatched (occlusion, missed detections)
    history_s: float = 60.0  # seconds of (t, box, score) samples each track keeps for the rules
    accel_std: float = 1.0  # Kalman process noise: unexpected acceleration, in box heights per s²
    measurement_std: float = 0.05  # Kalman measurement noise: detector box error, in box heights

    def __post_init__(self):
        if not 0 <= self.low_score <= self.high_score <= 1:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1, got {self.low_score}, {self.high_score}")
        for name in ("match_iou", "low_match_iou"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} is an IoU in (0, 1], got {getattr(self, name)}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits counts frames and must be at least 1, got {self.min_hits}")
        for name in ("max_age", "history_s", "accel_std", "measurement_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrackSample:
    """One matched observation of a track: the detection's own box (not the filtered one) and score."""

    t: float
    box: tuple[float, float, float, float]  # x1 y1 x2 y2 in pixels
    score: float


class BoxFilter:
    """Constant-velocity Kalman filter on a box's centre x, centre y, width and height.

    The four axes are independent (block-diagonal model), so each is a two-state filter written out in
    closed form on arrays of four; noise scales with the box height so near and far objects behave alike.
    """

    def __init__(self, box: np.ndarray, accel_std: float, measurement_std: float):
        self.accel_std = accel_std
        self.measurement_std = measurement_std
        self.position = _box_to_cxcywh(box)
        self.velocity = np.zeros(4)
        height = self._height()
        self.var_position = np.full(4, (measurement_std * height) ** 2)
        self.cov_position_velocity = np.zeros(4)
        self.var_velocity = np.full(4, (INITIAL_SPEED_STD * height) ** 2)

    def _height(self) -> float:
        return max(float(self.position[3]), 1.0)

    def predict(self, dt: float) -> None:
        if dt <= 0:
            return
        # White-noise acceleration: Q = q [[dt³/3, dt²/2], [dt²/2, dt]] per axis.
        q = (self.accel_std * self._height()) ** 2
        self.position = self.position + self.velocity * dt
        self.var_position = (
            self.var_position + 2 * dt * self.cov_position_velocity + dt * dt * self.var_velocity + q * dt**3 / 3
        )
        self.cov_position_velocity = self.cov_position_velocity + dt * self.var_velocity + q * dt**2 / 2
        self.var_velocity = self.var_velocity + q * dt
        self.position[2:] = np.maximum(self.position[2:], 1.0)

    def update(self, box: np.ndarray) -> None:
        innovation = _box_to_cxcywh(box) - self.position
        innovation_var = self.var_position + (self.measurement_std * self._height()) ** 2
        gain_position = self.var_position / innovation_var
        gain_velocity = self.cov_position_velocity / innovation_var
        self.position = self.position + gain_position * innovation
        self.velocity = self.velocity + gain_velocity * innovation
        self.var_velocity = self.var_velocity - gain_velocity * self.cov_position_velocity
        self.cov_position_velocity = (1 - gain_position) * self.cov_position_velocity
        self.var_position = (1 - gain_position) * self.var_position

    @property
    def box(self) -> np.ndarray:
        cx, cy, w, h = self.position
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class Track:
    """One object followed over time.

    `box` is where the object is believed to be now: the matched detection's box, or the filter's
    prediction while the track is unmatched (`matched` is False) during an occlusion gap.
    """

    def __init__(self, track_id: int, label: int, t: float, box: np.ndarray, score: float, params: TrackerParams):
        self.track_id = track_id
        self.label = label
        self.hits = 0
        self.confirmed = False
        self.first_seen = t
        self.last_seen = t
        self.matched = True
        self.history: deque[TrackSample] = deque()
        self._params = params
        self._filter = BoxFilter(box, params.accel_std, params.measurement_std)
        self._predicted_at = t
        self.box = box
        self._record(t, box, score)

    def predict(self, t: float) -> None:
        self._filter.predict(t - self._predicted_at)
        self._predicted_at = t
        self.box = self._filter.box
        self.matched = False

    def match(self, t: float, box: np.ndarray, score: float) -> None:
        self._filter.update(box)
        self.box = box
        self.last_seen = t
        self.matched = True
        self._record(t, box, score)

    def _record(self, t: float, box: np.ndarray, score: float) -> None:
        self.hits += 1
        self.confirmed = self.confirmed or self.hits >= self._params.min_hits
        self.history.append(TrackSample(t, tuple(float(v) for v in box), float(score)))
        while self.history[0].t < t - self._params.history_s:
            self.history.popleft()

    @property
    def predicted_box(self) -> np.ndarray:
        return self._filter.box

    def mean_score(self, since: float) -> float:
        """Mean detection score of the samples from `since` on (the evidence behind an event)."""
        scores = [sample.score for sample in self.history if sample.t >= since]
        return float(np.mean(scores)) if scores else self.history[-1].score


class Tracker:
    """Turns per-frame detections into tracks; `update` returns the confirmed tracks alive at that time."""

    def __init__(self, params: TrackerParams | None = None):
        self.params = params or TrackerParams()
        self.tracks: list[Track] = []
        self._next_id = 1
        self._last_t: float | None = None

    def update(self, t: float, detections: Detections) -> list[Track]:
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"frame times must not go backwards: got t={t} after t={self._last_t}")
        self._last_t = t
        for track in self.tracks:
            track.predict(t)

        params = self.params
        high = np.flatnonzero(detections.scores >= params.high_score)
        low = np.flatnonzero((detections.scores >= params.low_score) & (detections.scores < params.high_score))
        unmatched_high: list[int] = []
        for label in sorted({int(v) for v in detections.labels} | {track.label for track in self.tracks}):
            confirmed = [tr for tr in self.tracks if tr.label == label and tr.confirmed]
            tentative = [tr for tr in self.tracks if tr.label == label and not tr.confirmed]
            high_of_label = [int(i) for i in high if detections.labels[i] == label]
            low_of_label = [int(i) for i in low if detections.labels[i] == label]
            # Confirmed tracks pick first so a spurious new track cannot steal their detection; low-score
            # detections (often the partly occluded object) may only extend tracks, never start them.
            confirmed, high_of_label = self._associate(t, confirmed, high_of_label, detections, params.match_iou)
            self._associate(t, confirmed, low_of_label, detections, params.low_match_iou)
            _, high_of_label = self._associate(t, tentative, high_of_label, detections, params.match_iou)
            unmatched_high += high_of_label

        self.tracks = [track for track in self.tracks if self._alive(track, t)]
        for i in unmatched_high:
            self.tracks.append(
                Track(self._next_id, int(detections.labels[i]), t, detections.boxes[i], detections.scores[i], params)
            )
            self._next_id += 1
        return [track for track in self.tracks if track.confirmed]

    def _associate(
        self, t: float, tracks: list[Track], indexes: list[int], detections: Detections, min_iou: float
    ) -> tuple[list[Track], list[int]]:
        """Match tracks to the detections at `indexes`; return the tracks and detection indexes left over."""
        if not tracks or not indexes:
            return tracks, indexes
        predicted = np.array([track.predicted_box for track in tracks])
        pairs = greedy_match(iou_matrix(predicted, detections.boxes[indexes]), min_iou)
        for row, col in pairs:
            i = indexes[col]
            tracks[row].match(t, detections.boxes[i].astype(float), float(detections.scores[i]))
        used_rows = {row for row, _ in pairs}
        used_cols = {col for _, col in pairs}
        return (
            [track for row, track in enumerate(tracks) if row not in used_rows],
            [i for col, i in enumerate(indexes) if col not in used_cols],
        )

    def _alive(self, track: Track, t: float) -> bool:
        if track.matched:
            return True
        # A tentative track that misses a frame was most likely a false detection.
        return track.confirmed and t - track.last_seen <= self.params.max_age


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N, 4) with every box in b (M, 4), x1 y1 x2 y2."""
    a = np.asarray(a, float).reshape(-1, 4)
    b = np.asarray(b, float).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    intersection = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def greedy_match(scores: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    """(row, column) pairs by decreasing score, each row and column used at most once, scores >= minimum."""
    rows, cols = np.nonzero(scores >= minimum)
    order = np.argsort(-scores[rows, cols], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs = []
    for row, col in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if row not in used_rows and col not in used_cols:
            pairs.append((row, col))
            used_rows.add(row)
            used_cols.add(col)
    return pairs


def _box_to_cxcywh(box: Iterable[float]) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
