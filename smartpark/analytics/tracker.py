"""Multi-object tracking: follows detections from frame to frame so the rules can reason about one object.

ByteTrack-style association per class by IoU against each track's Kalman prediction: high-score
detections first, then low-score ones only to keep confirmed tracks alive. Boxes are widened by a buffer
before the IoU (C-BIoU), so a person walking at 5 fps, who moves half a box width between frames, or a
car pulling away still overlaps its prediction. Birth needs `min_hits` consecutive matches; death comes
`max_age` seconds after the last match, in seconds rather than frames because camera frame rates vary.
"""

from collections import deque
from dataclasses import dataclass

import numpy as np

from smartpark.detections import Detections

# Velocity uncertainty of a new track, in box heights per second: wide enough that the second match alone
# sets the speed of a car crossing the frame.
INITIAL_SPEED_STD = 2.0


@dataclass(frozen=True)
class TrackerParams:
    """How detections are associated into tracks. Scores are detector confidences, times are seconds."""

    # 0.4 rather than ByteTrack's 0.5-0.6: this small detector scores people of 11-30 px at night around 0.4-0.5.
    high_score: float = 0.4  # detections at or above this are matched first and may start tracks
    low_score: float = 0.1  # detections in [low_score, high_score) only keep confirmed tracks alive
    match_iou: float = 0.3  # least IoU between a high-score detection and a track's predicted box
    low_match_iou: float = 0.5  # stricter for low-score detections, which are more often false
    match_buffer: float = 0.3  # boxes grow by this fraction of their size on each side before the IoU
    min_hits: int = 3  # consecutive matches before a track is confirmed and reported
    max_age: float = 1.5  # seconds a confirmed track lives on unmatched (occlusion, missed detections)
    history_s: float = 60.0  # seconds of (t, box, score) samples each track keeps for the rules
    accel_std: float = 1.0  # Kalman process noise: unexpected acceleration, in box heights per s²
    size_change_std: float = 0.2  # Kalman process noise: random change of box size, box heights per √s
    measurement_std: float = 0.05  # Kalman measurement noise: detector box error, in box heights

    def __post_init__(self):
        if not 0 <= self.low_score <= self.high_score <= 1:
            raise ValueError(f"need 0 <= low_score <= high_score <= 1, got {self.low_score}, {self.high_score}")
        for name in ("match_iou", "low_match_iou"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} is an IoU in (0, 1], got {getattr(self, name)}")
        if self.min_hits < 1:
            raise ValueError(f"min_hits counts frames and must be at least 1, got {self.min_hits}")
        if self.match_buffer < 0:
            raise ValueError(
                f"match_buffer is a fraction of the box size and cannot be negative, got {self.match_buffer}"
            )
        for name in ("max_age", "history_s", "accel_std", "size_change_std", "measurement_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


Box = tuple[float, float, float, float]  # x1 y1 x2 y2 in pixels


@dataclass(frozen=True)
class TrackSample:
    """One matched observation of a track: the detection's own box (not the filtered one) and score."""

    t: float
    box: Box
    score: float


class AxisFilter:
    """Kalman filter of one box coordinate: its value and its velocity, in closed form on floats.

    A coordinate given no velocity variance and no acceleration noise keeps a velocity of zero and follows
    a random walk driven by its drift noise instead.
    """

    __slots__ = ("cov", "value", "var_value", "var_velocity", "velocity")

    def __init__(self, value: float, var_value: float, var_velocity: float):
        self.value = value
        self.velocity = 0.0
        self.var_value = var_value
        self.cov = 0.0
        self.var_velocity = var_velocity

    def predict(self, dt: float, accel_var: float, drift_var: float) -> None:
        # White-noise acceleration, Q = a [[dt³/3, dt²/2], [dt²/2, dt]], plus a random walk of the value.
        self.value += self.velocity * dt
        self.var_value += 2 * dt * self.cov + dt * dt * self.var_velocity + accel_var * dt**3 / 3 + drift_var * dt
        self.cov += dt * self.var_velocity + accel_var * dt * dt / 2
        self.var_velocity += accel_var * dt

    def update(self, measured: float, noise_var: float) -> None:
        innovation_var = self.var_value + noise_var
        gain_value, gain_velocity = self.var_value / innovation_var, self.cov / innovation_var
        innovation = measured - self.value
        self.value += gain_value * innovation
        self.velocity += gain_velocity * innovation
        self.var_velocity -= gain_velocity * self.cov
        self.cov *= 1 - gain_value
        self.var_value *= 1 - gain_value


class BoxFilter:
    """Kalman filter of a box: its centre moves at a constant velocity, its size follows a random walk.

    A size trend estimated from detector jitter and extrapolated over an occlusion gap would shrink or
    bloat the predicted box until nothing matches it, hence no velocity for the size. The four coordinates
    are independent; their noise scales with the box height, so near and far objects behave alike.
    """

    def __init__(self, box: Box, params: TrackerParams):
        self.params = params
        x1, y1, x2, y2 = box
        height = max(y2 - y1, 1.0)
        var_measured = (params.measurement_std * height) ** 2
        var_speed = (INITIAL_SPEED_STD * height) ** 2
        self.centre = (
            AxisFilter((x1 + x2) / 2, var_measured, var_speed),
            AxisFilter((y1 + y2) / 2, var_measured, var_speed),
        )
        self.size = (AxisFilter(x2 - x1, var_measured, 0.0), AxisFilter(y2 - y1, var_measured, 0.0))

    def _height(self) -> float:
        return max(self.size[1].value, 1.0)

    def predict(self, dt: float) -> None:
        if dt <= 0:
            return
        accel_var = (self.params.accel_std * self._height()) ** 2
        drift_var = (self.params.size_change_std * self._height()) ** 2
        for axis in self.centre:
            axis.predict(dt, accel_var, 0.0)
        for axis in self.size:
            axis.predict(dt, 0.0, drift_var)
            axis.value = max(axis.value, 1.0)

    def update(self, box: Box) -> None:
        noise_var = (self.params.measurement_std * self._height()) ** 2
        x1, y1, x2, y2 = box
        for axis, measured in zip(
            (*self.centre, *self.size), ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), strict=True
        ):
            axis.update(measured, noise_var)

    @property
    def box(self) -> Box:
        cx, cy = (axis.value for axis in self.centre)
        w, h = (axis.value for axis in self.size)
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


class Track:
    """One object followed over time.

    `box` is where the object is believed to be now: the matched detection's box, or the filter's
    prediction while the track is unmatched (`matched` is False) during an occlusion gap. Boxes are tuples
    of floats, which the rules unpack many times a frame.
    """

    def __init__(self, track_id: int, label: int, t: float, box: Box, score: float, params: TrackerParams):
        self.track_id = track_id
        self.label = label
        self.hits = 0
        self.confirmed = False
        self.first_seen = t
        self.last_seen = t
        self.matched = True
        self.history: deque[TrackSample] = deque()
        self._params = params
        self._filter = BoxFilter(box, params)
        self._predicted_at = t
        self.box = box
        self._record(t, score)

    def predict(self, t: float) -> None:
        self._filter.predict(t - self._predicted_at)
        self._predicted_at = t
        self.box = self._filter.box
        self.matched = False

    def match(self, t: float, box: Box, score: float) -> None:
        self._filter.update(box)
        self.box = box
        self.last_seen = t
        self.matched = True
        self._record(t, score)

    def _record(self, t: float, score: float) -> None:
        self.hits += 1
        self.confirmed = self.confirmed or self.hits >= self._params.min_hits
        self.history.append(TrackSample(t, self.box, float(score)))
        while self.history[0].t < t - self._params.history_s:
            self.history.popleft()

    @property
    def predicted_box(self) -> Box:
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
            box = tuple(detections.boxes[i].tolist())
            self.tracks.append(
                Track(self._next_id, int(detections.labels[i]), t, box, float(detections.scores[i]), params)
            )
            self._next_id += 1
        return [track for track in self.tracks if track.confirmed]

    def _associate(
        self, t: float, tracks: list[Track], indexes: list[int], detections: Detections, min_iou: float
    ) -> tuple[list[Track], list[int]]:
        """Match tracks to the detections at `indexes`; return the tracks and detection indexes left over."""
        if not tracks or not indexes:
            return tracks, indexes
        predicted = buffered(np.array([track.predicted_box for track in tracks]), self.params.match_buffer)
        observed = buffered(detections.boxes[indexes], self.params.match_buffer)
        pairs = greedy_match(iou_matrix(predicted, observed), min_iou)
        for row, col in pairs:
            i = indexes[col]
            tracks[row].match(t, tuple(detections.boxes[i].tolist()), float(detections.scores[i]))
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


def buffered(boxes: np.ndarray, fraction: float) -> np.ndarray:
    """Boxes (N, 4) grown by `fraction` of their width and height on every side."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    margin = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1) * fraction
    return boxes + margin * np.array([-1, -1, 1, 1])


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
