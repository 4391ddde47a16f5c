"""The smart-park rules driven end to end through SceneAnalytics by scripted object trajectories."""

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pytest

from smartpark.analytics import DEFAULT_VEHICLE_LIFT, RuleConfigError, SceneAnalytics, footprint
from smartpark.detections import PERSON, VEHICLE, Detections
from smartpark.events import Event, Rule
from smartpark.geometry import Line, SceneConfig, Zone, ZoneKind
from smartpark.metrics import final_events

FPS = 5
FRAME = 1 / FPS
JITTER_PX = 1.5
CAR = (80.0, 50.0)  # box width, height
PERSON_SIZE = (30.0, 80.0)


@dataclass
class Actor:
    """An object following keyframes (t, x, y) of its footprint, seen from the first keyframe to the last."""

    label: int
    path: list[tuple[float, float, float]]
    gaps: tuple[tuple[float, float], ...] = ()  # [from, to) intervals the detector misses it
    score: float = 0.9

    def box(self, t: float, frame: int) -> list[float] | None:
        times, xs, ys = zip(*self.path, strict=True)
        if not times[0] <= t <= times[-1] or any(begin <= t < end for begin, end in self.gaps):
            return None
        x, y = np.interp(t, times, xs), np.interp(t, times, ys)
        w, h = CAR if self.label == VEHICLE else PERSON_SIZE
        bottom = y + (DEFAULT_VEHICLE_LIFT * h if self.label == VEHICLE else 0.0)
        # Deterministic detector jitter of a few pixels on every edge.
        jitter = JITTER_PX * np.sin(frame * np.array([1.3, 2.9, 2.1, 3.7]) + x / 7)
        return list(np.array([x - w / 2, bottom - h, x + w / 2, bottom]) + jitter)


def car(*path, **kwargs) -> Actor:
    return Actor(VEHICLE, list(path), **kwargs)


def person(*path, **kwargs) -> Actor:
    return Actor(PERSON, list(path), **kwargs)


def scene(*zones: Zone, lines: tuple[Line, ...] = ()) -> SceneConfig:
    return SceneConfig(camera="cam-1", width=640, height=480, zones=zones, lines=lines)


def rectangle(name: str, kind: ZoneKind, x1, y1, x2, y2, **params) -> Zone:
    return Zone(name, kind, ((x1, y1), (x2, y1), (x2, y2), (x1, y2)), params)


def run(config: SceneConfig, actors: list[Actor], duration: float, **analytics_kwargs) -> list[Event]:
    """The raw event stream of a scripted sequence, finish() included."""
    analytics = SceneAnalytics(config, **analytics_kwargs)
    stream = []
    for frame in range(round(duration * FPS) + 1):
        t = frame / FPS
        seen = [(box, actor) for actor in actors if (box := actor.box(t, frame)) is not None]
        detections = Detections.from_arrays(
            [box for box, _ in seen], [a.score for _, a in seen], [a.label for _, a in seen]
        )
        stream += analytics.update(t, detections)
    return stream + analytics.finish(duration)


def near(value: float, expected: float, frames: float = 1) -> bool:
    return value is not None and abs(value - expected) <= frames * FRAME + 1e-6


# --- occupancy -------------------------------------------------------------------------------------------------

SPACE = rectangle("space-1", ZoneKind.PARKING_SPACE, 100, 300, 200, 400)


def test_car_parking_shorter_than_on_s_triggers_nothing():
    # given: parked from t=1 to t=2.6; the footprint is inside from t=0.55 to t=3.1 (< on_s = 3 s)
    visitor = car((0, 40, 350), (1, 150, 350), (2.6, 150, 350), (3.4, 230, 350), (4.4, 500, 350))

    # when
    events = run(scene(SPACE), [visitor], duration=12)

    # then
    assert events == []


def test_parked_car_occupies_and_frees_the_space_through_an_occlusion_gap():
    # given: enters at t≈0.55, a 1 s occlusion at t=8, leaves at t≈20.33
    parked = car((0, 40, 350), (1, 150, 350), (20, 150, 350), (21, 300, 350), (22, 500, 350), gaps=((8.0, 9.0),))

    # when
    events = run(scene(SPACE), [parked], duration=30)

    # then
    occupied, free = events
    assert occupied.rule == Rule.OCCUPANCY and occupied.attributes["state"] == "occupied"
    assert near(occupied.start, 0.55, frames=2)
    assert free.attributes["state"] == "free"
    assert near(free.start, 20.33, frames=2)
    assert occupied.end is None and free.end is None
    assert free.attributes["track_id"] == occupied.attributes["track_id"]
    assert 0.8 < occupied.confidence <= 0.9 + 1e-6


def test_car_parked_at_sequence_start_is_backdated_to_first_sighting():
    events = run(scene(SPACE), [car((0, 150, 350), (10, 150, 350))], duration=10)

    assert [(e.attributes["state"], e.start) for e in events] == [("occupied", 0.0)]


def test_car_wedged_between_neighbours_and_detected_below_the_tracking_score_still_occupies():
    # given: a parked car whose detections never reach the tracker's high_score (0.5), so it is never tracked
    wedged = car((0, 150, 350), (20, 150, 350), score=0.3)

    # when
    events = run(scene(SPACE), [wedged], duration=20)

    # then: the raw detections alone are evidence; no track id to report
    (occupied,) = events
    assert occupied.attributes == {"state": "occupied"}
    assert occupied.start == 0.0
    assert occupied.confidence == pytest.approx(0.3)


def test_detections_too_weak_to_be_evidence_leave_the_space_free():
    assert run(scene(SPACE), [car((0, 150, 350), (20, 150, 350), score=0.2)], duration=20) == []


def test_a_car_cut_by_the_frame_edge_is_no_evidence_for_the_space_beside_it():
    # given: a space at the left edge of the frame, and a car whose box the frame edge cuts
    edge_space = rectangle("edge", ZoneKind.PARKING_SPACE, 0, 300, 100, 400)
    cut = car((0, 20, 350), (20, 20, 350))  # box from x=-20: its car stands partly out of view

    # when / then
    assert run(scene(edge_space), [cut], duration=20) == []
    assert len(run(scene(edge_space), [car((0, 50, 350), (20, 50, 350))], duration=20)) == 1


# --- fire lane ------------------------------------------------------------------------------------------------

FIRE_LANE = rectangle("fire-lane", ZoneKind.FIRE_LANE, 300, 100, 600, 200)


def stopping_in_fire_lane(leave_at: float) -> Actor:
    # Drives in at 100 px/s, entering at t=0.9; pulls away at leave_at and is out at leave_at + 1.933.
    return car((0, 210, 150), (2, 410, 150), (leave_at, 410, 150), (leave_at + 1, 460, 150), (leave_at + 3, 760, 150))


def test_fire_lane_dwell_just_below_threshold_triggers_nothing():
    # inside from t=0.9 to t=10.53: 9.63 s < dwell_s = 10 s
    assert run(scene(FIRE_LANE), [stopping_in_fire_lane(leave_at=8.6)], duration=16) == []


def test_fire_lane_dwell_just_above_threshold_is_a_violation_with_start_and_end():
    # inside from t=0.9 to t=11.73: 10.83 s
    stream = run(scene(FIRE_LANE), [stopping_in_fire_lane(leave_at=9.8)], duration=16)

    opened, closed = stream
    assert opened.event_id == closed.event_id
    assert opened.end is None
    assert near(opened.start, 0.9) and closed.start == opened.start
    assert near(closed.end, 11.733)
    assert closed.attributes["duration"] == pytest.approx(closed.end - closed.start)
    assert closed.attributes["track_id"] == opened.attributes["track_id"]


def test_traffic_driving_through_the_fire_lane_triggers_nothing():
    passing = car((0, 200, 150), (5, 700, 150))  # 3 s inside

    assert run(scene(FIRE_LANE), [passing], duration=10) == []


# --- line counting ---------------------------------------------------------------------------------------------

ENTRY = Line("entry", (320, 100), (320, 450))  # heading down the screen: x < 320 is its left


def test_line_crossed_both_ways_counts_one_in_and_one_out():
    # given: crosses x=320 rightwards at t=1.833, back leftwards at t=9.167
    walker = person((0, 210, 300), (4, 450, 300), (7, 450, 300), (10, 270, 300))

    # when
    events = run(scene(lines=(ENTRY,)), [walker], duration=12)

    # then
    into, out = events
    assert (into.rule, into.zone, into.attributes["direction"], into.attributes["label"]) == (
        Rule.LINE_COUNT,
        "entry",
        "in",
        "person",
    )
    assert into.start == pytest.approx(1.833, abs=0.1)
    assert out.attributes["direction"] == "out"
    assert out.start == pytest.approx(9.167, abs=0.1)
    assert into.attributes["track_id"] == out.attributes["track_id"]


def test_vehicle_crossing_is_counted_with_its_label():
    events = run(scene(lines=(ENTRY,)), [car((0, 450, 200), (3, 150, 200))], duration=6)

    assert [(e.attributes["direction"], e.attributes["label"]) for e in events] == [("out", "vehicle")]


def test_object_jittering_on_the_line_counts_nothing():
    # The footprint wobbles a few pixels either side of the line for 20 s.
    loiterer = person((0, 320, 300), (20, 320, 300))

    assert run(scene(lines=(ENTRY,)), [loiterer], duration=20) == []


def test_labels_param_restricts_what_a_line_counts():
    line = Line("entry", (320, 100), (320, 450), {"labels": ["vehicle"]})
    walker = person((0, 210, 300), (4, 450, 300))

    assert run(scene(lines=(line,)), [walker], duration=6) == []


# --- intrusion --------------------------------------------------------------------------------------------------

RESTRICTED = rectangle("roof", ZoneKind.RESTRICTED, 400, 300, 600, 450)


def test_person_in_restricted_zone_is_an_intrusion_with_start_and_end():
    # enters at t=1.029, leaves at t=8.25
    trespasser = person((0, 330, 400), (2.5, 500, 400), (7, 500, 400), (9.5, 700, 400))

    stream = run(scene(RESTRICTED), [trespasser], duration=12)

    opened, closed = stream
    assert (opened.rule, opened.end) == (Rule.INTRUSION, None)
    assert near(opened.start, 1.029)
    assert near(closed.end, 8.25)
    assert closed.event_id == opened.event_id


def test_car_in_restricted_zone_and_a_brief_step_inside_are_ignored():
    parked = car((0, 500, 400), (10, 500, 400))
    brief = person((0, 350, 320), (0.6, 410, 320), (1.2, 350, 320))  # inside for 0.4 s < min_s

    assert run(scene(RESTRICTED), [parked, brief], duration=12) == []


# --- duty post: off duty -------------------------------------------------------------------------------------------

POST = rectangle("gate-post", ZoneKind.DUTY_POST, 50, 50, 250, 250, duty_hours=[["07:00", "19:00"]])
# Leaves the post at t=21.333, stands outside, is back inside at t=62.667.
GUARD_WHO_LEAVES = person((0, 150, 200), (20, 150, 200), (24, 450, 200), (60, 450, 200), (64, 150, 200), (80, 150, 200))


def test_post_left_and_returned_during_duty_hours_is_off_duty_with_backdated_times():
    stream = run(scene(POST), [GUARD_WHO_LEAVES], duration=80, clock_start=datetime(2024, 5, 1, 8, 0))

    opened, closed = stream
    assert (opened.rule, opened.zone, opened.end) == (Rule.OFF_DUTY, "gate-post", None)
    assert near(opened.start, 21.333)
    assert closed.event_id == opened.event_id
    assert near(closed.end, 62.667)


def test_post_left_outside_duty_hours_is_no_event():
    assert run(scene(POST), [GUARD_WHO_LEAVES], duration=80, clock_start=datetime(2024, 5, 1, 20, 0)) == []


def test_without_a_wall_clock_the_post_is_always_on_duty():
    events = final_events(run(scene(POST), [GUARD_WHO_LEAVES], duration=80))

    assert [e.rule for e in events] == [Rule.OFF_DUTY]


def test_duty_hours_can_run_past_midnight():
    night_post = rectangle("gate-post", ZoneKind.DUTY_POST, 50, 50, 250, 250, duty_hours=[["22:00", "06:00"]])

    events = run(scene(night_post), [GUARD_WHO_LEAVES], duration=80, clock_start=datetime(2024, 5, 1, 23, 59, 50))

    assert [e.rule for e in final_events(events)] == [Rule.OFF_DUTY]


# --- duty post: inactivity ------------------------------------------------------------------------------------------


def test_motionless_guard_is_inactive_until_walking_off():
    # given: walks in, stands still from t=5 to t=50, then walks away
    guard = person((0, 400, 200), (5, 150, 200), (50, 150, 200), (55, 400, 200), (60, 400, 200))

    # when
    stream = run(scene(POST), [guard], duration=60)

    # then
    opened, closed = stream
    assert (opened.rule, opened.end) == (Rule.INACTIVITY, None)
    assert near(opened.start, 5.0, frames=2)
    assert near(closed.end, 50.0, frames=2)
    assert closed.event_id == opened.event_id
    assert "track_id" in opened.attributes


def test_pacing_guard_is_not_inactive():
    # Walks back and forth between x=100 and x=200 every 4 s for a minute.
    path = [(t, 100.0 if (t // 2) % 2 == 0 else 200.0, 200.0) for t in range(0, 61, 2)]

    assert run(scene(POST), [person(*path)], duration=60) == []


def test_missed_detections_shorter_than_max_age_break_neither_stillness_nor_presence():
    # given: a motionless guard the detector misses for 1 s; an empty post would be off duty after 0.5 s
    post = rectangle("gate-post", ZoneKind.DUTY_POST, 50, 50, 250, 250, empty_s=0.5)
    guard = person((0, 150, 200), (45, 150, 200), gaps=((20.0, 21.0),))

    # when
    stream = run(scene(post), [guard], duration=45)

    # then: one inactivity event from the first sighting, closed when the sequence ends
    opened, closed = stream
    assert opened.rule == Rule.INACTIVITY
    assert near(opened.start, 0.0, frames=2)
    assert closed.end == 45


def test_bad_zone_params_name_the_zone_and_the_param():
    post = rectangle("gate-post", ZoneKind.DUTY_POST, 50, 50, 250, 250, duty_hours=[["25:00", "06:00"]])
    with pytest.raises(RuleConfigError, match=r"gate-post.*HH:MM"):
        SceneAnalytics(scene(post))
    lane = rectangle("fire-lane", ZoneKind.FIRE_LANE, 300, 100, 600, 200, dwell_s="long")
    with pytest.raises(RuleConfigError, match=r"fire-lane.*dwell_s"):
        SceneAnalytics(scene(lane))


def test_footprint_of_vehicles_is_raised():
    assert footprint((0, 0, 10, 100), PERSON) == (5, 100)
    assert footprint((0, 0, 10, 100), VEHICLE) == (5, 85)
    assert footprint((0, 0, 10, 100), VEHICLE, vehicle_lift=0.0) == (5, 100)
