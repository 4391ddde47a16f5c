import json

import numpy as np
import pytest

from smartpark.events import Rule
from smartpark.geometry import ZoneKind, validate_scene_config
from smartpark.scenes import (
    CONDITIONS,
    FRAME_HEIGHT,
    FRAME_WIDTH,
    HELDOUT_SEED_BASE,
    export_coco,
    heldout_seed,
    render_training_sample,
)
from smartpark.scenes.sequences import FIRE_LANE_PARAMS, generate_sequence


def test_same_seed_same_bytes_other_seed_other_frame():
    a, b, c = render_training_sample(7), render_training_sample(7), render_training_sample(8)
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.boxes, b.boxes) and np.array_equal(a.labels, b.labels)
    assert a.image.tobytes() != c.image.tobytes()


@pytest.mark.parametrize("condition", CONDITIONS)
def test_frames_carry_sane_ground_truth(condition):
    for seed in range(6):
        sample = render_training_sample(seed, condition)
        assert sample.image.shape == (FRAME_HEIGHT, FRAME_WIDTH, 3) and sample.image.dtype == np.uint8
        assert sample.condition == condition
        boxes = sample.boxes
        assert (
            (boxes[:, 0] >= 0) & (boxes[:, 2] <= FRAME_WIDTH) & (boxes[:, 1] >= 0) & (boxes[:, 3] <= FRAME_HEIGHT)
        ).all()
        assert ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()
        assert set(sample.labels.tolist()) <= {0, 1}
        assert len(sample.ignore) == len(boxes)


def test_night_is_darker_than_day():
    day = np.mean([render_training_sample(s, "day").image.mean() for s in range(8)])
    night = np.mean([render_training_sample(s, "night").image.mean() for s in range(8)])
    assert night < day * 0.6


def test_every_scene_has_people_and_vehicles_to_find():
    labels = np.concatenate([render_training_sample(s).labels[~render_training_sample(s).ignore] for s in range(20)])
    assert (labels == 0).sum() > 40 and (labels == 1).sum() > 20


def test_unknown_condition_is_refused():
    with pytest.raises(ValueError, match="unknown condition"):
        render_training_sample(1, "fog")


def test_heldout_seeds_are_outside_the_training_range():
    assert heldout_seed(0) == HELDOUT_SEED_BASE and heldout_seed(5) > HELDOUT_SEED_BASE


def test_coco_export(tmp_path):
    frames = [render_training_sample(s) for s in range(3)]
    dataset = export_coco(frames, tmp_path / "frames.json")
    reloaded = json.loads((tmp_path / "frames.json").read_text())
    assert reloaded == dataset
    assert len(dataset["images"]) == 3
    assert len(dataset["annotations"]) == sum(len(f.boxes) for f in frames)
    assert {c["name"] for c in dataset["categories"]} == {"vehicle", "person"}
    assert (tmp_path / dataset["images"][0]["file_name"]).exists()


def test_sequences_are_deterministic_and_have_a_valid_scene_config():
    a, b = generate_sequence(3, duration_s=4), generate_sequence(3, duration_s=4)
    assert a.events == b.events and a.config == b.config
    frames_a, frames_b = list(a.frames()), list(b.frames())
    assert len(frames_a) == 20
    assert all(x.image.tobytes() == y.image.tobytes() for x, y in zip(frames_a, frames_b, strict=True))
    assert validate_scene_config(a.config.to_dict()) == a.config
    for view, required in (("gate", {ZoneKind.DUTY_POST}), ("lot", {ZoneKind.FIRE_LANE, ZoneKind.RESTRICTED})):
        sequence = generate_sequence(3, duration_s=4, view=view)
        assert sequence.view == view
        assert {ZoneKind.PARKING_SPACE} | required <= {z.kind for z in sequence.config.zones}
    assert [line.name for line in generate_sequence(3, duration_s=4, view="gate").config.lines] == ["entry"]


def test_the_event_log_follows_the_script():
    for seed in range(12):
        sequence = generate_sequence(seed)
        roles = [actor.role for actor in sequence.actors]
        zones = {z.name for z in sequence.config.zones}
        fire = [e for e in sequence.events if e.rule == Rule.FIRE_LANE]
        long_stops = [r for r in roles if r.startswith("fire-lane:") and float(r[10:-1]) > FIRE_LANE_PARAMS["dwell_s"]]
        assert len(fire) == (len(long_stops) if "fire-lane" in zones else 0), (seed, roles, fire)
        for event in fire:
            assert event.end is None or event.end - event.start > FIRE_LANE_PARAMS["dwell_s"]
        if any(r.startswith("intrude") for r in roles) and "restricted" in zones:
            assert any(e.rule == Rule.INTRUSION for e in sequence.events), seed
        walkers = sum(r in ("walk-in", "walk-out") for r in roles) if sequence.config.lines else 0
        person_crossings = [
            e for e in sequence.events if e.rule == Rule.LINE_COUNT and e.attributes["label"] == "person"
        ]
        assert len(person_crossings) >= walkers


def test_command_line_writes_a_sequence_and_a_coco_set(tmp_path):
    from smartpark.scenes.__main__ import main

    assert main(["sequence", "4", str(tmp_path / "seq"), "--duration", "2"]) == 0
    assert {p.name for p in (tmp_path / "seq").iterdir()} == {
        "frames.mp4", "scene.json", "events.json", "boxes.json", "sequence.json"
    }  # fmt: skip
    config = json.loads((tmp_path / "seq" / "scene.json").read_text())
    assert validate_scene_config(config).camera == "cam-1"
    assert main(["coco", str(tmp_path / "set.json"), "--frames", "2", "--heldout"]) == 0
    assert len(json.loads((tmp_path / "set.json").read_text())["images"]) == 2
