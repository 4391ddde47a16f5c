"""Smart-park rules: turn one camera's confirmed tracks into occupancy, fire-lane, intrusion, line-count,
off-duty and inactivity events.

Each rule watches one zone or line and reads its thresholds from that zone's or line's `params`, with the
defaults documented on the rule. Conditions are confirmed after a delay but events are back-dated to when
the condition began. Duration events are emitted twice under one event_id: once when confirmed
(end=None) and once when they end.
"""

import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Generic, TypeVar

import numpy as np

from smartpark.analytics.tracker import Track, TrackSample
from smartpark.detections import LABELS, PERSON, VEHICLE, Detections
from smartpark.events import Event, Rule
from smartpark.geometry import Line, Point, Zone, ZoneKind, segments_intersect

# Vehicles seen in perspective touch the ground above their box's bottom edge; by default the footprint
# is raised by this fraction of the box height.
DEFAULT_VEHICLE_LIFT = 0.15


class RuleConfigError(ValueError):
    """A zone or line parameter a rule cannot use; the message names the zone and the parameter."""


def footprint(box: Sequence[float], label: int, vehicle_lift: float = DEFAULT_VEHICLE_LIFT) -> Point:
    """Where an object stands: bottom-centre of its box, raised by `vehicle_lift` box heights for vehicles."""
    x1, y1, x2, y2 = box
    lift = vehicle_lift * (y2 - y1) if label == VEHICLE else 0.0
    return (x1 + x2) / 2, y2 - lift


# --- reading zone and line params -------------------------------------------------------------------------


def _number(owner: Zone | Line, name: str, default: float, *, positive: bool = False) -> float:
    value = owner.params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise RuleConfigError(f"{owner.name!r}: param {name!r} must be a non-negative number, got {value!r}")
    if positive and value == 0:
        raise RuleConfigError(f"{owner.name!r}: param {name!r} must be above 0")
    return float(value)


def _labels(owner: Zone | Line, default: Sequence[str]) -> frozenset[int]:
    names = owner.params.get("labels", list(default))
    if not isinstance(names, list | tuple) or not names or any(name not in LABELS for name in names):
        raise RuleConfigError(f"{owner.name!r}: param 'labels' must list some of {list(LABELS)}, got {names!r}")
    return frozenset(LABELS.index(name) for name in names)


def _seconds_of_day(text: object, owner: Zone) -> int:
    try:
        hours, minutes = (int(part) for part in str(text).split(":"))
    except ValueError:
        hours = minutes = -1
    if not (0 <= hours <= 23 and 0 <= minutes <= 59) and (hours, minutes) != (24, 0):
        raise RuleConfigError(f"{owner.name!r}: duty hours are 'HH:MM' (00:00 to 24:00), got {text!r}")
    return hours * 3600 + minutes * 60


def _duty_hours(owner: Zone) -> tuple[tuple[int, int], ...]:
    """The param "duty_hours": [["HH:MM", "HH:MM"], ...] local times; a range may run past midnight."""
    ranges = owner.params.get("duty_hours", [["00:00", "24:00"]])
    if not isinstance(ranges, list | tuple) or not all(isinstance(r, list | tuple) and len(r) == 2 for r in ranges):
        raise RuleConfigError(f"{owner.name!r}: duty_hours is a list of ['HH:MM', 'HH:MM'] pairs, got {ranges!r}")
    parsed = tuple((_seconds_of_day(begin, owner), _seconds_of_day(end, owner)) for begin, end in ranges)
    if any(begin == end for begin, end in parsed):
        raise RuleConfigError(f"{owner.name!r}: a duty-hours range is empty; write ['00:00', '24:00'] for all day")
    return parsed


# --- shared machinery -----------------------------------------------------------------------------------------


class BoundedZone:
    """A zone behind its bounding box, which rules out most footprints without the polygon test."""

    def __init__(self, zone: Zone):
        xs, ys = zip(*zone.polygon, strict=True)
        self.zone = zone
        self.bounds = (min(xs), min(ys), max(xs), max(ys))

    def contains(self, point: Point) -> bool:
        x, y = point
        x1, y1, x2, y2 = self.bounds
        return x1 <= x <= x2 and y1 <= y <= y2 and self.zone.contains(point)


class Hysteresis:
    """A debounced condition: turns on after being true for `on_s`, off after being false for `off_s`.

    `update` returns, on a change, the time the deciding run began, so events can be back-dated.
    """

    def __init__(self, on_s: float, off_s: float):
        self.on_s = on_s
        self.off_s = off_s
        self.active = False
        self.changing_since: float | None = None  # start of a run against the current state, if any

    def update(self, t: float, condition: bool) -> float | None:
        if condition == self.active:
            self.changing_since = None
            return None
        if self.changing_since is None:
            self.changing_since = t
        if t - self.changing_since < (self.off_s if self.active else self.on_s):
            return None
        self.active = condition
        began, self.changing_since = self.changing_since, None
        return began


class SceneRule(ABC):
    """One rule watching one zone or line of a camera, fed the confirmed tracks at every frame."""

    rule: Rule

    def __init__(self, camera: str, target: Zone | Line, vehicle_lift: float):
        self.camera = camera
        self.target = target
        self.vehicle_lift = vehicle_lift
        self._open: dict[object, Event] = {}  # duration events still going on, by what they are about

    def observe(self, detections: Detections) -> None:
        """The frame's raw detections, before tracking: most rules reason about tracks only and ignore them."""
        return None

    @abstractmethod
    def update(self, t: float, tracks: Sequence[Track]) -> list[Event]: ...

    def finish(self, t: float) -> list[Event]:
        """Close the events still open when the sequence ends: at t, or when their ending had begun."""
        events = []
        for key in list(self._open):
            ending_since = self._ending_since(key)
            events.append(self._end(key, t if ending_since is None else ending_since))
        return events

    def _ending_since(self, key: object) -> float | None:
        """When what will end the open event `key` began (leaving, moving, coming back), if it has."""
        return None

    def _footprint(self, box: Sequence[float], label: int) -> Point:
        return footprint(box, label, self.vehicle_lift)

    def _event(self, start: float, confidence: float = 1.0, **attributes) -> Event:
        return Event(self.rule, self.camera, self.target.name, start, None, confidence, attributes)

    def _start(self, key: object, start: float, confidence: float = 1.0, **attributes) -> Event:
        event = self._event(start, confidence, **attributes)
        self._open[key] = event
        return event

    def _end(self, key: object, end: float) -> Event:
        event = self._open.pop(key)
        return replace(event, end=end, attributes={**event.attributes, "duration": end - event.start})


State = TypeVar("State")


class TrackRule(SceneRule, Generic[State]):
    """A rule that follows each track of its labels on its own.

    A track new to the rule replays its history, so conditions that began while the track was still
    tentative are back-dated to its first sighting. Unmatched (coasting) tracks bring no new evidence.
    """

    def __init__(self, camera: str, target: Zone | Line, vehicle_lift: float, labels: frozenset[int]):
        super().__init__(camera, target, vehicle_lift)
        self.labels = labels
        self._states: dict[int, State] = {}
        self._last_seen: dict[int, float] = {}

    @abstractmethod
    def _new_state(self) -> State: ...

    @abstractmethod
    def _observe(self, track: Track, state: State, sample: TrackSample) -> list[Event]: ...

    def _track_lost(self, track_id: int) -> list[Event]:
        """The track died: its open event ends when its ending had begun, or else when it was last seen."""
        if track_id not in self._open:
            return []
        ending_since = self._ending_since(track_id)
        return [self._end(track_id, self._last_seen[track_id] if ending_since is None else ending_since)]

    def update(self, t: float, tracks: Sequence[Track]) -> list[Event]:
        events: list[Event] = []
        alive = set()
        for track in tracks:
            if track.label not in self.labels:
                continue
            alive.add(track.track_id)
            if not track.matched:
                continue
            state = self._states.get(track.track_id)
            samples: Sequence[TrackSample] = (track.history[-1],)
            if state is None:
                state = self._states[track.track_id] = self._new_state()
                samples = track.history
            for sample in samples:
                events += self._observe(track, state, sample)
            self._last_seen[track.track_id] = track.last_seen
        for track_id in self._states.keys() - alive:
            events += self._track_lost(track_id)
            del self._states[track_id], self._last_seen[track_id]
        return events


# --- the rules -----------------------------------------------------------------------------------------------


class OccupancyRule(SceneRule):
    """Parking-space occupancy with on/off hysteresis; instantaneous events with attributes state (and track_id).

    The evidence, frame by frame, is any vehicle whose ground line lies in the space: a confirmed track
    (coasting ones too, so an occlusion gap shorter than the tracker's max_age does not free the space) or a
    raw detection scoring at least `evidence_score` (default 0.25). Parked cars wedged between neighbours
    are often detected at 0.25-0.4, too low to start a track, yet they sit still in the same place frame
    after frame, which is evidence enough for a space. Occupied once evidence has lasted `on_s` (default
    3 s), with gaps up to `max_gap_s` (default 1 s) bridged, dated to when the run began; free once there
    has been none for `off_s` (default 5 s), dated to the last evidence. A box cut by the left or right
    edge of the frame is no evidence: its car extends out of view, so its visible ground line says
    nothing about which space it stands in.
    """

    rule = Rule.OCCUPANCY
    # Points sampled along the box's ground line: a box that a detector drew around two cars parked side by
    # side (or that perspective shifts half a space) still puts a fair share of its ground line in each space.
    GROUND_SAMPLES = 8
    EDGE_MARGIN_PX = 1.0

    def __init__(
        self, camera: str, zone: Zone, vehicle_lift: float = DEFAULT_VEHICLE_LIFT, frame_width: float | None = None
    ):
        super().__init__(camera, zone, vehicle_lift)
        self.area = BoundedZone(zone)
        self.frame_width = frame_width
        self.on_s = _number(zone, "on_s", 3.0)
        self.off_s = _number(zone, "off_s", 5.0)
        self.max_gap_s = _number(zone, "max_gap_s", 1.0)
        self.evidence_score = _number(zone, "evidence_score", 0.25)
        # The share of a vehicle's ground line that must lie in the space for the vehicle to count as in it.
        self.min_share = _number(zone, "min_share", 0.3)
        self.occupied = False
        self._evidence_since: float | None = None  # start of the current run of evidence (gaps bridged)
        self._last_evidence: float | None = None
        self._detections: Detections | None = None
        self._occupant: int | None = None
        self._run_scores: list[float] = []  # best evidence score per frame of the current run: the confidence

    def observe(self, detections: Detections) -> None:
        self._detections = detections

    def update(self, t: float, tracks: Sequence[Track]) -> list[Event]:
        in_space = [tr for tr in tracks if tr.label == VEHICLE and self._counts(tr.box)]
        if in_space:
            self._occupant = in_space[0].track_id
        scores = [tr.history[-1].score for tr in in_space]
        if self._detections is not None:
            found = self._detections
            keep = (found.labels == VEHICLE) & (found.scores >= self.evidence_score)
            pairs = zip(found.boxes[keep], found.scores[keep], strict=True)
            scores += [float(score) for box, score in pairs if self._counts(box)]
            self._detections = None
        if scores:
            if self._last_evidence is None or t - self._last_evidence > self.max_gap_s:
                self._evidence_since, self._run_scores = t, []
            self._last_evidence = t
            self._run_scores.append(max(scores))
        if not self.occupied:
            if self._last_evidence == t and t - self._evidence_since >= self.on_s:
                self.occupied = True
                confidence = sum(self._run_scores) / len(self._run_scores)
                return [self._event(self._evidence_since, confidence, state="occupied", **self._occupant_attributes())]
            return []
        if self._last_evidence is not None and t - self._last_evidence >= self.off_s:
            self.occupied = False
            return [self._event(self._last_evidence, state="free", **self._occupant_attributes())]
        return []

    def _occupant_attributes(self) -> dict:
        """The track seen in the space most recently, when a track (not only raw detections) was there."""
        return {} if self._occupant is None else {"track_id": self._occupant}

    def _counts(self, box) -> bool:
        return self._in_space(box) and not self._cut_by_frame_edge(box)

    def _cut_by_frame_edge(self, box) -> bool:
        x1, _, x2, _ = box
        if x1 <= self.EDGE_MARGIN_PX:
            return True
        return self.frame_width is not None and x2 >= self.frame_width - self.EDGE_MARGIN_PX

    def _in_space(self, box) -> bool:
        """Whether at least `min_share` of the vehicle's ground line (its footprint, widened to the box) is inside."""
        x1, _, x2, _ = box
        _, ground_y = self._footprint(box, VEHICLE)
        n = self.GROUND_SAMPLES
        hits = sum(self.area.contains((x1 + (x2 - x1) * (k + 0.5) / n, ground_y)) for k in range(n))
        return hits >= self.min_share * n


class DwellRule(TrackRule[Hysteresis]):
    """An object of the rule's labels inside the zone for at least a dwell time: the event starts when it
    entered and ends, back-dated to when it left, once it has stayed out for `exit_s`."""

    dwell_param: str
    dwell_default: float
    default_labels: tuple[str, ...]

    def __init__(self, camera: str, zone: Zone, vehicle_lift: float = DEFAULT_VEHICLE_LIFT):
        super().__init__(camera, zone, vehicle_lift, _labels(zone, self.default_labels))
        self.area = BoundedZone(zone)
        self.dwell_s = _number(zone, self.dwell_param, self.dwell_default)
        self.exit_s = _number(zone, "exit_s", 2.0)

    def _new_state(self) -> Hysteresis:
        return Hysteresis(on_s=self.dwell_s, off_s=self.exit_s)

    def _observe(self, track: Track, state: Hysteresis, sample: TrackSample) -> list[Event]:
        inside = self.area.contains(self._footprint(sample.box, track.label))
        began = state.update(sample.t, inside)
        if began is None:
            return []
        if state.active:
            return [self._start(track.track_id, began, track.mean_score(began), track_id=track.track_id)]
        return [self._end(track.track_id, began)]

    def _ending_since(self, key: object) -> float | None:
        return self._states[key].changing_since


class FireLaneRule(DwellRule):
    """A vehicle parked in the fire lane: inside longer than `dwell_s` (default 10 s), out for `exit_s`
    (default 2 s) to end. Traffic driving through stays less than the dwell time. Params: labels
    (default ["vehicle"])."""

    rule = Rule.FIRE_LANE
    dwell_param, dwell_default, default_labels = "dwell_s", 10.0, ("vehicle",)


class IntrusionRule(DwellRule):
    """A person inside a restricted zone for at least `min_s` (default 1 s), out for `exit_s` (default 2 s)
    to end. Params: labels (default ["person"]; vehicles do not count unless listed)."""

    rule = Rule.INTRUSION
    dwell_param, dwell_default, default_labels = "min_s", 1.0, ("person",)


@dataclass
class _Crossing:
    t: float  # interpolated time the footprint was on the line
    direction: str
    side: float  # +1 or -1: the side the track went to
    label: str
    confidence: float  # mean detection score around the crossing
    cleared_margin: bool = False  # got margin_frac box heights past the line since


@dataclass
class _LineState:
    previous: tuple[float, Point, float] | None = None  # (t, footprint, signed distance) of the last sample
    pending: _Crossing | None = None
    last_count: dict[str, float] = field(default_factory=dict)  # direction -> crossing time


class LineCountRule(TrackRule[_LineState]):
    """Directed counting on a line a→b: a confirmed track whose footprint path crosses the segment counts
    "in" from the left of a→b (Line.side > 0) to the right, "out" the other way, dated to the interpolated
    crossing; attributes direction, label, track_id.

    Against detector jitter on the line, a crossing counts only once the track has stayed on the new side
    for `settle_s` (default 0.5 s) and got `margin_frac` box heights past the line (default 0.1); stepping
    back before then cancels it; a track counts each direction at most once per `cooldown_s` (default 2 s).
    Params: labels (default both).
    """

    rule = Rule.LINE_COUNT

    def __init__(self, camera: str, line: Line, vehicle_lift: float = DEFAULT_VEHICLE_LIFT):
        super().__init__(camera, line, vehicle_lift, _labels(line, LABELS))
        self.line = line
        self.settle_s = _number(line, "settle_s", 0.5)
        self.margin_frac = _number(line, "margin_frac", 0.1)
        self.cooldown_s = _number(line, "cooldown_s", 2.0)
        self._length = math.dist(line.a, line.b)

    def _new_state(self) -> _LineState:
        return _LineState()

    def _observe(self, track: Track, state: _LineState, sample: TrackSample) -> list[Event]:
        point = self._footprint(sample.box, track.label)
        distance = self.line.side(point) / self._length
        if distance == 0:
            return []  # exactly on the line: the next sample tells which side it went to
        previous, state.previous = state.previous, (sample.t, point, distance)
        if previous is None:
            return []
        previous_t, previous_point, previous_distance = previous
        side = math.copysign(1.0, distance)
        if state.pending is not None and side != state.pending.side:
            state.pending = None
        elif side != math.copysign(1.0, previous_distance) and segments_intersect(
            previous_point, point, self.line.a, self.line.b
        ):
            fraction = previous_distance / (previous_distance - distance)
            crossed_at = previous_t + fraction * (sample.t - previous_t)
            direction = "in" if previous_distance > 0 else "out"
            confidence = track.mean_score(previous_t)
            state.pending = _Crossing(crossed_at, direction, side, LABELS[track.label], confidence)
        crossing = state.pending
        if crossing is None:
            return []
        box_height = sample.box[3] - sample.box[1]
        crossing.cleared_margin |= abs(distance) >= self.margin_frac * box_height
        if not crossing.cleared_margin or sample.t - crossing.t < self.settle_s:
            return []
        return self._count(track.track_id, state)

    def _count(self, track_id: int, state: _LineState) -> list[Event]:
        crossing, state.pending = state.pending, None
        if crossing is None or not crossing.cleared_margin:
            return []
        last = state.last_count.get(crossing.direction)
        if last is not None and crossing.t - last < self.cooldown_s:
            return []
        state.last_count[crossing.direction] = crossing.t
        attributes = {"direction": crossing.direction, "label": crossing.label, "track_id": track_id}
        return [self._event(crossing.t, crossing.confidence, **attributes)]

    def _track_lost(self, track_id: int) -> list[Event]:
        # A track that crossed clearly and then vanished (left the frame) before settle_s still counts.
        return self._count(track_id, self._states[track_id])

    def finish(self, t: float) -> list[Event]:
        return [event for track_id, state in self._states.items() for event in self._count(track_id, state)]


class OffDutyRule(SceneRule):
    """The duty post empty too long during duty hours.

    Starts when the post has had no person footprint inside for `empty_s` (default 30 s), dated to when it
    emptied; ends, back-dated, once a person has been back for `return_s` (default 2 s) or duty hours end.
    Params: duty_hours, [["HH:MM", "HH:MM"], ...] local times of `clock_start` (default all day; always on
    duty when the sequence has no wall clock).
    """

    rule = Rule.OFF_DUTY

    def __init__(
        self,
        camera: str,
        zone: Zone,
        vehicle_lift: float = DEFAULT_VEHICLE_LIFT,
        clock_start: datetime | None = None,
    ):
        super().__init__(camera, zone, vehicle_lift)
        self.area = BoundedZone(zone)
        self.clock_start = clock_start
        self.duty_hours = _duty_hours(zone)
        self._empty = Hysteresis(on_s=_number(zone, "empty_s", 30.0), off_s=_number(zone, "return_s", 2.0))

    def on_duty(self, t: float) -> bool:
        if self.clock_start is None:
            return True
        wall = self.clock_start + timedelta(seconds=t)
        now = wall.hour * 3600 + wall.minute * 60 + wall.second + wall.microsecond / 1e6
        return any(begin <= now < end if begin < end else now >= begin or now < end for begin, end in self.duty_hours)

    def update(self, t: float, tracks: Sequence[Track]) -> list[Event]:
        staffed = any(tr.label == PERSON and self.area.contains(self._footprint(tr.box, PERSON)) for tr in tracks)
        began = self._empty.update(t, self.on_duty(t) and not staffed)
        if began is None:
            return []
        return [self._start(self.target.name, began)] if self._empty.active else [self._end(self.target.name, began)]

    def _ending_since(self, key: object) -> float | None:
        return self._empty.changing_since


class _Stillness:
    """A person's recent (smoothed) box centres and the latest run of them that fits in a square of side
    `limit`: how long the person has kept still."""

    def __init__(self):
        self.recent: deque[TrackSample] = deque()  # the raw samples the smoothing averages
        self.run: deque[tuple[float, float, float]] = deque()  # (t, x, y) of the still run
        self.low = np.full(2, np.inf)
        self.high = np.full(2, -np.inf)
        self.moving_since: float | None = None

    @property
    def since(self) -> float | None:
        return self.run[0][0] if self.run else None

    def fits(self, centre: np.ndarray, limit: float) -> bool:
        return bool(np.max(np.maximum(self.high, centre) - np.minimum(self.low, centre)) <= limit)

    def widen(self, centre: np.ndarray) -> None:
        self.low = np.minimum(self.low, centre)
        self.high = np.maximum(self.high, centre)

    def push(self, t: float, centre: np.ndarray, limit: float) -> None:
        """Add a centre, dropping the oldest ones until the run fits in the square again."""
        self.run.append((t, float(centre[0]), float(centre[1])))
        if self.fits(centre, limit):
            self.widen(centre)
            return
        self.low, self.high = centre.copy(), centre.copy()
        kept = 1
        for _, x, y in list(reversed(self.run))[1:]:
            point = np.array([x, y])
            if not self.fits(point, limit):
                break
            self.widen(point)
            kept += 1
        while len(self.run) > kept:
            self.run.popleft()

    def clear(self) -> None:
        self.run.clear()
        self.low[:] = np.inf
        self.high[:] = -np.inf


class InactivityRule(TrackRule[_Stillness]):
    """A person at the duty post who does not move: the sleeping guard.

    Box centres are averaged over `smooth_s` (default 1 s; dated to the mean sample time so the average
    does not lag) to ride out detector jitter. The event starts when the centre has stayed within
    `still_frac` (default 0.1) of the box height for `still_s` (default 30 s), dated to when the stillness
    began; it ends, back-dated, once the person has been away from that spot or out of the post for
    `move_s` (default 1 s). Attributes: track_id.
    """

    rule = Rule.INACTIVITY

    def __init__(self, camera: str, zone: Zone, vehicle_lift: float = DEFAULT_VEHICLE_LIFT):
        super().__init__(camera, zone, vehicle_lift, frozenset({PERSON}))
        self.area = BoundedZone(zone)
        self.still_s = _number(zone, "still_s", 30.0)
        self.still_frac = _number(zone, "still_frac", 0.1, positive=True)
        self.move_s = _number(zone, "move_s", 1.0)
        self.smooth_s = _number(zone, "smooth_s", 1.0)

    def _new_state(self) -> _Stillness:
        return _Stillness()

    def _ending_since(self, key: object) -> float | None:
        return self._states[key].moving_since

    def _observe(self, track: Track, state: _Stillness, sample: TrackSample) -> list[Event]:
        state.recent.append(sample)
        while state.recent[0].t < sample.t - self.smooth_s:
            state.recent.popleft()
        t = float(np.mean([s.t for s in state.recent]))
        x1, y1, x2, y2 = np.mean([s.box for s in state.recent], axis=0)
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        limit = self.still_frac * (y2 - y1)
        inside = self.area.contains(self._footprint((x1, y1, x2, y2), PERSON))

        if track.track_id in self._open:
            if inside and state.fits(centre, limit):
                state.widen(centre)
                state.moving_since = None
                return []
            if state.moving_since is None:
                state.moving_since = t
            if t - state.moving_since < self.move_s:
                return []
            ended_at, state.moving_since = state.moving_since, None
            state.clear()
            return [self._end(track.track_id, ended_at)]

        if not inside:
            state.clear()
            return []
        state.push(t, centre, limit)
        if t - state.since < self.still_s:
            return []
        start = state.since
        return [self._start(track.track_id, start, track.mean_score(start), track_id=track.track_id)]


def build_rules(
    camera: str,
    zones: Sequence[Zone],
    lines: Sequence[Line],
    *,
    clock_start: datetime | None = None,
    vehicle_lift: float = DEFAULT_VEHICLE_LIFT,
    frame_width: float | None = None,
) -> list[SceneRule]:
    """The rules a camera's zones and lines call for, in config order; bad params raise RuleConfigError."""
    rules: list[SceneRule] = []
    for zone in zones:
        match zone.kind:
            case ZoneKind.PARKING_SPACE:
                rules.append(OccupancyRule(camera, zone, vehicle_lift, frame_width))
            case ZoneKind.FIRE_LANE:
                rules.append(FireLaneRule(camera, zone, vehicle_lift))
            case ZoneKind.RESTRICTED:
                rules.append(IntrusionRule(camera, zone, vehicle_lift))
            case ZoneKind.DUTY_POST:
                rules.append(OffDutyRule(camera, zone, vehicle_lift, clock_start))
                rules.append(InactivityRule(camera, zone, vehicle_lift))
    rules += [LineCountRule(camera, line, vehicle_lift) for line in lines]
    return rules
