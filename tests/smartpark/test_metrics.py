"""Event scoring: one-to-one matching within a start-time tolerance, timing errors, line-count errors."""

import json
from dataclasses import replace

import pytest

from smartpark.events import Event, Rule
from smartpark.metrics import count_errors, line_counts, score_events


def event(rule: Rule, start: float, end: float | None = None, zone: str = "z1", camera: str = "cam-1", **attributes):
    return Event(rule, camera, zone, start, end, attributes=attributes)


def crossing(start: float, direction: str = "in", label: str = "person", line: str = "entry", camera: str = "cam-1"):
    return event(Rule.LINE_COUNT, start, zone=line, camera=camera, direction=direction, label=label)


def test_events_match_within_the_tolerance_only():
    truth = [event(Rule.INTRUSION, 10.0, 20.0), event(Rule.INTRUSION, 100.0, 110.0)]
    predicted = [event(Rule.INTRUSION, 14.0, 21.0), event(Rule.INTRUSION, 106.0, 110.0)]

    scores = score_events(predicted, truth, tolerance_s=5.0)["per_rule"]["intrusion"]

    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 1, 1)
    assert scores["precision"] == scores["recall"] == 0.5
    assert scores["start_error_mean_s"] == scores["start_error_max_s"] == pytest.approx(4.0)


def test_matching_is_one_to_one_and_duplicates_become_false_positives():
    truth = [event(Rule.FIRE_LANE, 50.0, 80.0)]
    predicted = [event(Rule.FIRE_LANE, 52.0, 81.0), event(Rule.FIRE_LANE, 49.0, 79.0), event(Rule.FIRE_LANE, 53.0)]

    scores = score_events(predicted, truth)["per_rule"]["fire_lane"]

    assert (scores["tp"], scores["fp"], scores["fn"]) == (1, 2, 0)
    assert scores["start_error_max_s"] == pytest.approx(1.0)  # the closest start won


def test_closest_pairs_win_when_candidates_compete():
    truth = [event(Rule.INTRUSION, 10.0), event(Rule.INTRUSION, 14.0)]
    predicted = [event(Rule.INTRUSION, 13.0), event(Rule.INTRUSION, 9.0)]

    scores = score_events(predicted, truth)["per_rule"]["intrusion"]

    assert scores["tp"] == 2
    assert scores["start_error_max_s"] == pytest.approx(1.0)


def test_timing_errors_of_starts_and_ends():
    truth = [event(Rule.OFF_DUTY, 10.0, 60.0), event(Rule.OFF_DUTY, 200.0, 260.0), event(Rule.OFF_DUTY, 400.0)]
    predicted = [
        event(Rule.OFF_DUTY, 11.0, 63.0),
        event(Rule.OFF_DUTY, 198.0, 259.0),
        event(Rule.OFF_DUTY, 401.0, 430.0),
    ]

    scores = score_events(predicted, truth)["per_rule"]["off_duty"]

    assert scores["tp"] == 3
    assert scores["start_error_mean_s"] == pytest.approx((1 + 2 + 1) / 3)
    assert scores["start_error_max_s"] == pytest.approx(2.0)
    # the third pair has no true end, so only two end errors count
    assert scores["end_error_mean_s"] == pytest.approx((3 + 1) / 2)
    assert scores["end_error_max_s"] == pytest.approx(3.0)


def test_only_events_of_the_same_camera_zone_state_and_direction_match():
    truth = [
        event(Rule.OCCUPANCY, 10.0, state="occupied"),
        crossing(30.0, "in"),
        event(Rule.INTRUSION, 50.0, zone="roof"),
    ]
    predicted = [
        event(Rule.OCCUPANCY, 10.0, state="free"),
        crossing(30.0, "out"),
        event(Rule.INTRUSION, 50.0, zone="yard"),
        event(Rule.INTRUSION, 50.0, zone="roof", camera="cam-2"),
    ]

    overall = score_events(predicted, truth)["overall"]

    assert (overall["tp"], overall["fp"], overall["fn"]) == (0, 4, 3)


def test_the_two_emissions_of_one_duration_event_count_once():
    opened = event(Rule.INACTIVITY, 5.0)
    closed = replace(opened, end=50.0)

    scores = score_events([opened, closed], [event(Rule.INACTIVITY, 5.0, 50.0)])["per_rule"]["inactivity"]

    assert (scores["tp"], scores["fp"], scores["end_error_max_s"]) == (1, 0, 0.0)


def test_rules_with_nothing_to_score_report_none_not_perfect():
    scores = score_events([event(Rule.INTRUSION, 1.0)], [])

    empty = scores["per_rule"]["occupancy"]
    assert (empty["tp"], empty["fp"], empty["fn"]) == (0, 0, 0)
    assert empty["precision"] is None and empty["recall"] is None and empty["start_error_mean_s"] is None
    only_predicted = scores["per_rule"]["intrusion"]
    assert only_predicted["precision"] == 0.0 and only_predicted["recall"] is None
    json.dumps(scores)  # plain numbers and None all the way down


def test_line_counts_per_camera_line_direction_and_label():
    events = [crossing(1, "in"), crossing(2, "in"), crossing(3, "out"), crossing(4, "in", "vehicle")]
    events.append(event(Rule.INTRUSION, 5.0))

    assert line_counts(events) == {
        ("cam-1", "entry", "in", "person"): 2,
        ("cam-1", "entry", "out", "person"): 1,
        ("cam-1", "entry", "in", "vehicle"): 1,
    }


def test_count_errors_per_key_and_overall():
    truth = [crossing(t, "in") for t in range(10)] + [crossing(t, "out") for t in range(4)]
    predicted = [crossing(t, "in") for t in range(8)] + [crossing(t, "out") for t in range(5)]
    predicted.append(crossing(1, "in", "vehicle"))

    errors = count_errors(predicted, truth)

    rows = {(row["direction"], row["label"]): row for row in errors["lines"]}
    assert rows[("in", "person")]["relative_error"] == pytest.approx(0.2)
    assert rows[("out", "person")]["relative_error"] == pytest.approx(0.25)
    assert rows[("in", "vehicle")]["truth"] == 0 and rows[("in", "vehicle")]["relative_error"] is None
    assert errors["overall"] == {
        "predicted": 14,
        "truth": 14,
        "absolute_error": 4,
        "relative_error": pytest.approx(4 / 14),
    }
    json.dumps(errors)


def test_count_errors_with_no_crossings_at_all():
    assert count_errors([], []) == {
        "lines": [],
        "overall": {"predicted": 0, "truth": 0, "absolute_error": 0, "relative_error": 0.0},
    }
