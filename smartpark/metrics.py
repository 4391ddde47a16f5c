"""Scoring predicted smart-park events against a sequence's ground-truth log: per-rule detection quality
and timing errors, and line-count errors. Results are plain dicts of numbers, ready for JSON.

Both inputs may be raw event streams: events are first collapsed by event_id, the last emission winning,
so a duration event emitted when confirmed and again when it ended counts once.
"""

from collections import Counter
from collections.abc import Iterable

from smartpark.events import Event, Rule


def final_events(events: Iterable[Event]) -> list[Event]:
    """One event per event_id, the last emitted version of each, in first-emission order."""
    latest: dict[str, Event] = {}
    for event in events:
        latest[event.event_id] = event
    return list(latest.values())


def _match_key(event: Event) -> tuple:
    """Events can only match within the same camera, rule, zone and, where it matters, kind of change."""
    rule = Rule(event.rule)
    if rule == Rule.OCCUPANCY:
        detail: tuple = (event.attributes.get("state"),)
    elif rule == Rule.LINE_COUNT:
        detail = (event.attributes.get("direction"), event.attributes.get("label"))
    else:
        detail = ()
    return (event.camera, rule, event.zone, *detail)


def match_events(predicted: list[Event], truth: list[Event], tolerance_s: float) -> list[tuple[Event, Event]]:
    """One-to-one (predicted, truth) pairs with the same key and starts within tolerance_s, closest first."""
    truth_by_key: dict[tuple, list[int]] = {}
    for j, event in enumerate(truth):
        truth_by_key.setdefault(_match_key(event), []).append(j)
    candidates = [
        (abs(p.start - truth[j].start), i, j)
        for i, p in enumerate(predicted)
        for j in truth_by_key.get(_match_key(p), [])
        if abs(p.start - truth[j].start) <= tolerance_s
    ]
    used_predicted: set[int] = set()
    used_truth: set[int] = set()
    pairs = []
    for _, i, j in sorted(candidates):
        if i not in used_predicted and j not in used_truth:
            used_predicted.add(i)
            used_truth.add(j)
            pairs.append((predicted[i], truth[j]))
    return pairs


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def _stats(n_predicted: int, n_truth: int, pairs: list[tuple[Event, Event]]) -> dict:
    tp = len(pairs)
    precision, recall = _ratio(tp, n_predicted), _ratio(tp, n_truth)
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    start_errors = [abs(p.start - g.start) for p, g in pairs]
    end_errors = [abs(p.end - g.end) for p, g in pairs if p.end is not None and g.end is not None]
    return {
        "tp": tp,
        "fp": n_predicted - tp,
        "fn": n_truth - tp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "start_error_mean_s": _ratio(sum(start_errors), len(start_errors)),
        "start_error_max_s": max(start_errors, default=None),
        "end_error_mean_s": _ratio(sum(end_errors), len(end_errors)),
        "end_error_max_s": max(end_errors, default=None),
    }


def score_events(predicted: Iterable[Event], truth: Iterable[Event], *, tolerance_s: float = 5.0) -> dict:
    """Per rule (every Rule, by its value) and overall: tp, fp, fn, precision, recall, f1 and the mean and max
    |Δstart| and |Δend| in seconds over matched pairs (|Δend| where both have an end).

    Precision is None without predictions, recall None without truth, errors None without matches. Several
    predictions of one true event match it once; the others are false positives.
    """
    predicted, truth = final_events(predicted), final_events(truth)
    pairs = match_events(predicted, truth, tolerance_s)
    per_rule = {}
    for rule in Rule:
        per_rule[rule.value] = _stats(
            sum(Rule(e.rule) == rule for e in predicted),
            sum(Rule(e.rule) == rule for e in truth),
            [(p, g) for p, g in pairs if Rule(g.rule) == rule],
        )
    return {
        "tolerance_s": tolerance_s,
        "per_rule": per_rule,
        "overall": _stats(len(predicted), len(truth), pairs),
    }


def line_counts(events: Iterable[Event]) -> dict[tuple[str, str, str, str], int]:
    """Crossings per (camera, line, direction, label)."""
    return dict(
        Counter(
            (e.camera, e.zone, e.attributes["direction"], e.attributes["label"])
            for e in final_events(events)
            if Rule(e.rule) == Rule.LINE_COUNT
        )
    )


def count_errors(predicted: Iterable[Event], truth: Iterable[Event]) -> dict:
    """Line counts compared per (camera, line, direction, label) and overall.

    relative_error is |predicted - truth| / truth; for a key with no true crossings it is 0.0 when none
    were predicted either and None otherwise. Overall it is the summed absolute error over the summed truth.
    """
    predicted_counts, truth_counts = line_counts(predicted), line_counts(truth)
    rows = []
    for key in sorted(predicted_counts.keys() | truth_counts.keys()):
        p, g = predicted_counts.get(key, 0), truth_counts.get(key, 0)
        relative = abs(p - g) / g if g else (0.0 if p == 0 else None)
        camera, line, direction, label = key
        rows.append(
            {
                "camera": camera,
                "line": line,
                "direction": direction,
                "label": label,
                "predicted": p,
                "truth": g,
                "relative_error": relative,
            }
        )
    total_predicted = sum(predicted_counts.values())
    total_truth = sum(truth_counts.values())
    absolute = sum(abs(row["predicted"] - row["truth"]) for row in rows)
    return {
        "lines": rows,
        "overall": {
            "predicted": total_predicted,
            "truth": total_truth,
            "absolute_error": absolute,
            "relative_error": absolute / total_truth if total_truth else (0.0 if absolute == 0 else None),
        },
    }
