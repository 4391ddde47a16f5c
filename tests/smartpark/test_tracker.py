"""The multi-object tracker on scripted detections: birth, death in seconds, occlusion gaps, ByteTrack's
low-score stage, per-class association."""

import numpy as np
import pytest

from smartpark.analytics import Tracker, TrackerParams
from smartpark.detections import PERSON, VEHICLE, Detections


def person_box(x: float, y: float = 300.0, jitter: float = 0.0) -> list[float]:
    """A 30x80 person box whose bottom-centre is (x, y)."""
    return [x - 15 + jitter, y - 80 - jitter, x + 15 - jitter, y + jitter]


def frame(*objects: tuple[list[float], float, int]) -> Detections:
    """Detections from (box, score, label) triples."""
    if not objects:
        return Detections.empty()
    boxes, scores, labels = zip(*objects, strict=True)
    return Detections.from_arrays(boxes, scores, labels)


def track_ids_over(tracker: Tracker, frames: list[tuple[float, Detections]]) -> list[list[int]]:
    return [[track.track_id for track in tracker.update(t, detections)] for t, detections in frames]


def walking_person(fps: float, duration: float, gap: tuple[float, float] | None = None, speed: float = 60.0):
    """A person walking right at `speed` px/s with a little jitter, missed by the detector during `gap`."""
    frames = []
    for i in range(int(duration * fps) + 1):
        t = i / fps
        hidden = gap is not None and gap[0] <= t < gap[1]
        box = person_box(100 + speed * t, jitter=1.5 * np.sin(2.3 * i))
        frames.append((t, Detections.empty() if hidden else frame((box, 0.9, PERSON))))
    return frames


def test_track_is_reported_after_min_hits_and_a_two_frame_blip_never():
    # given
    tracker = Tracker(TrackerParams(min_hits=3))
    ghost = (person_box(500), 0.8, PERSON)
    walker = walking_person(fps=5, duration=2)

    # when: the ghost shows up in frames 1 and 2 only
    ids = []
    for i, (t, detections) in enumerate(walker):
        objects = [(detections.boxes[0].tolist(), 0.9, PERSON)] + ([ghost] if i in (1, 2) else [])
        ids.append([track.track_id for track in tracker.update(t, frame(*objects))])

    # then
    assert ids[:2] == [[], []]
    assert all(frame_ids == [1] for frame_ids in ids[2:])


def test_occlusion_gap_shorter_than_max_age_keeps_the_id_of_a_moving_person():
    # The person walks 60 px (two box widths) while hidden; the predicted box finds them again.
    tracker = Tracker(TrackerParams(max_age=1.5))

    ids = track_ids_over(tracker, walking_person(fps=5, duration=6, gap=(2.0, 3.0)))

    assert {i for frame_ids in ids for i in frame_ids} == {1}
    assert ids[12] == [1]  # t=2.4: hidden, but the confirmed track is still reported (coasting)


def test_coasting_track_is_reported_unmatched_with_its_predicted_box():
    tracker = Tracker()
    frames = walking_person(fps=5, duration=4, gap=(2.0, 3.0))
    for t, detections in frames[:13]:  # up to t=2.4, hidden since t=2.0
        tracks = tracker.update(t, detections)

    (track,) = tracks
    assert not track.matched
    assert track.last_seen == pytest.approx(1.8)
    centre_x = (track.box[0] + track.box[2]) / 2
    assert centre_x == pytest.approx(100 + 60 * 2.4, abs=6)


@pytest.mark.parametrize("fps", [5, 15])
def test_max_age_is_in_seconds_whatever_the_frame_rate(fps):
    short_gap = track_ids_over(Tracker(), walking_person(fps, duration=6, gap=(2.0, 3.2)))
    long_gap = track_ids_over(Tracker(), walking_person(fps, duration=6, gap=(2.0, 3.8)))

    assert {i for ids in short_gap for i in ids} == {1}
    assert len({i for ids in long_gap for i in ids}) == 2


def test_low_score_detections_keep_a_confirmed_track_alive_but_start_none():
    # given: a person seen confidently for 1 s, then only weakly (partly occluded) for 3 s
    tracker = Tracker(TrackerParams(high_score=0.5, low_score=0.1, max_age=0.5))
    stray = (person_box(500), 0.3, PERSON)
    reported = []

    # when
    for i in range(21):
        t = i / 5
        score = 0.9 if t < 1 else 0.3
        reported.append(tracker.update(t, frame((person_box(100 + 20 * t), score, PERSON), stray)))

    # then
    assert all([tr.track_id for tr in tracks] == [1] for tracks in reported[2:])
    assert reported[-1][0].matched
    assert reported[-1][0].mean_score(since=1.0) == pytest.approx(0.3)


def test_classes_are_associated_separately():
    tracker = Tracker()
    same_box = [100, 100, 180, 150]

    for i in range(4):
        tracks = tracker.update(i / 5, frame((same_box, 0.9, VEHICLE), (same_box, 0.9, PERSON)))

    assert sorted(tr.label for tr in tracks) == [VEHICLE, PERSON]
    assert len({tr.track_id for tr in tracks}) == 2


def test_two_people_walking_past_each_other_keep_their_ids():
    tracker = Tracker()
    for i in range(31):
        t = i / 5
        left_to_right = person_box(100 + 50 * t, y=300)
        right_to_left = person_box(400 - 50 * t, y=310)
        tracks = tracker.update(t, frame((left_to_right, 0.9, PERSON), (right_to_left, 0.9, PERSON)))
        if i == 2:
            first_ids = {tr.track_id: tr.box[0] < 250 for tr in tracks}

    # then: after crossing, the track that started on the left is now on the right
    assert {tr.track_id for tr in tracks} == set(first_ids)
    for tr in tracks:
        assert (tr.box[0] > 250) == first_ids[tr.track_id]


def test_history_keeps_the_last_history_s_seconds_of_matched_samples():
    tracker = Tracker(TrackerParams(history_s=2.0))

    for t, detections in walking_person(fps=5, duration=6, gap=(4.0, 4.6)):
        tracks = tracker.update(t, detections)

    (track,) = tracks

    times = [sample.t for sample in track.history]
    assert times[0] >= 6 - 2.0 - 1e-9
    assert not any(4.0 <= t < 4.6 for t in times)
    assert track.history[-1].score == pytest.approx(0.9)


def test_time_going_backwards_is_refused():
    tracker = Tracker()
    tracker.update(1.0, Detections.empty())

    with pytest.raises(ValueError, match="backwards"):
        tracker.update(0.5, Detections.empty())


def test_invalid_params_say_what_is_wrong():
    with pytest.raises(ValueError, match="min_hits"):
        TrackerParams(min_hits=0)
    with pytest.raises(ValueError, match="low_score"):
        TrackerParams(low_score=0.6, high_score=0.5)
