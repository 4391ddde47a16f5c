import json
import math
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch

from smartpark.decode import encode_targets
from smartpark.detector import (
    CenterNetDetector,
    DetectorConfig,
    count_parameters,
    load_checkpoint,
    load_detector,
    widen,
)
from smartpark.train import (
    SceneTargets,
    TrainConfig,
    centernet_distillation_loss,
    centernet_loss,
    main,
    train,
)

# A narrow network keeps these tests fast; the code paths are the same as the shipped one's.
TINY = DetectorConfig(
    stem_channels=8, stage_channels=(8, 16, 16), stage_blocks=(1, 1, 1), neck_channels=(8, 16), head_channels=8
)
FAST = {"batch_size": 2, "workers": 0, "warmup_steps": 1, "log_every": 1, "bf16": False}


def _batch(dataset, indices):
    items = [dataset[i] for i in indices]
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def test_a_few_steps_on_two_frames_lower_the_loss():
    # given: two rendered frames and a fresh model
    torch.manual_seed(0)
    batch = _batch(SceneTargets(seed=0, length=2), [0, 1])
    images = batch.pop("image").float() / 255
    model = CenterNetDetector(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    # when: it trains on them
    losses = []
    for _ in range(6):
        loss, parts = centernet_loss(model(images), batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    # then
    assert all(math.isfinite(value) for value in losses + list(parts.values()))
    assert losses[-1] < losses[0]


def test_train_writes_a_checkpoint_that_loads_back(tmp_path):
    out = tmp_path / "detector.pt"
    torch.manual_seed(0)
    initial = CenterNetDetector(TINY).state_dict()

    model, record = train(TrainConfig(steps=2, **FAST), TINY, out=out, log=lambda _line: None)

    # the weights moved, the record says what happened
    changed = [key for key, value in model.state_dict().items() if not torch.equal(value, initial[key])]
    assert any(key.endswith("weight") for key in changed)
    assert record["steps"] == 2 and record["images_seen"] == 4 and math.isfinite(record["final_loss"])
    assert json.loads(out.with_suffix(".json").read_text())["architecture"]["stage_channels"] == [8, 16, 16]
    # the fp16 checkpoint gives the same outputs as the trained model, within fp16 rounding
    loaded = load_detector(out)
    assert loaded.config == TINY and not loaded.training
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for trained, reloaded in zip(model.eval()(x), loaded(x), strict=True):
            torch.testing.assert_close(reloaded, trained, atol=0.05, rtol=0.02)
    assert not list(tmp_path.glob("*.tmp"))


def test_training_stops_when_the_time_budget_is_spent():
    _model, record = train(TrainConfig(steps=50, minutes=1e-6, **FAST), TINY, out=None, log=lambda _line: None)

    assert record["steps"] == 1


def test_ignored_regions_add_no_negative_loss():
    # given: an ignored person and a network that fires everywhere
    boxes, labels = np.array([[8.0, 8.0, 24.0, 40.0]]), np.array([1])
    ignored = encode_targets(boxes, labels, np.array([True]), (16, 16))
    unignored = encode_targets(np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool), (16, 16))
    outputs = (torch.full((1, 2, 16, 16), 3.0), torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16))

    def loss(targets):
        batch = {key: torch.from_numpy(value)[None] for key, value in asdict(targets).items()}
        return centernet_loss(outputs, batch)[0].item()

    # then: firing over the ignored person costs less than firing over background
    assert loss(ignored) < loss(unignored)


def test_training_seeds_stay_below_the_heldout_scenes():
    from smartpark.scenes import HELDOUT_SEED_BASE

    with pytest.raises(ValueError, match="held-out"):
        SceneTargets(seed=HELDOUT_SEED_BASE // 10_000_000, length=1)[0]


def _teacher_outputs():
    """A teacher's outputs on one 4x4 map: one confident vehicle centre at (1, 2), background elsewhere."""
    heatmap = torch.full((1, 2, 4, 4), -9.0)
    heatmap[0, 0, 1, 2] = 4.0
    return heatmap, torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)


def test_centernet_distillation_counts_the_gaps_decoding_reads_and_ignores_the_background():
    teacher = _teacher_outputs()
    assert centernet_distillation_loss(teacher, teacher).item() == 0.0

    # The background's logits and the boxes at empty cells: decoding never reads them, they cost ~nothing.
    background = [t.clone() for t in teacher]
    background[0][0, 1, 3, 3] = -6.0
    background[1][0, :, 3, 0] = 2.0
    background[2][0, :, 0, 0] = 0.5
    assert centernet_distillation_loss(background, teacher).item() < 1e-3

    # A size gap at the object's centre costs its L1 weighted by the centre's probability (the weights are
    # normalized by their sum, at least 1: one object), and a missed centre costs its probability gap.
    at_object = [t.clone() for t in teacher]
    at_object[1][0, 0, 1, 2] = 0.5
    missed = [t.clone() for t in teacher]
    missed[0][0, 0, 1, 2] = -2.0
    assert centernet_distillation_loss(at_object, teacher).item() == pytest.approx(
        0.5 * math.exp(4) / (1 + math.exp(4)), rel=0.01
    )
    assert centernet_distillation_loss(missed, teacher).item() > 0.5


WIDER = DetectorConfig(
    stem_channels=8, stage_channels=(12, 16, 24), stage_blocks=(1, 1, 1), neck_channels=(12, 16), head_channels=12
)


def _trained_tiny_checkpoint(path):
    """A TINY detector trained two steps (batch norm statistics moved off their defaults), saved at `path`."""
    torch.manual_seed(1)
    train(TrainConfig(steps=2, **FAST), TINY, out=path, log=lambda _line: None)
    return load_detector(path)


def test_widen_computes_exactly_what_the_narrow_detector_did(tmp_path):
    narrow = _trained_tiny_checkpoint(tmp_path / "narrow.pt")

    wide = widen(narrow, WIDER).eval()

    assert wide.config == WIDER and count_parameters(wide) > count_parameters(narrow)
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        for expected, got in zip(narrow(x), wide(x), strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # the new channels compute something (fresh weights); only what reads them starts at zero
    assert wide.stage4[0][0].weight[8:].abs().sum() > 0
    assert wide.stage8[0][0].weight[:, 8:].abs().sum() == 0


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stage_channels": (4, 16, 16)}, "cannot narrow"),
        ({"head_channels": 4}, "cannot narrow"),
        ({"stage_blocks": (1, 2, 1)}, "widths only"),
    ],
)
def test_widen_refuses_anything_but_a_wider_detector(change, message):
    with pytest.raises(ValueError, match=message):
        widen(CenterNetDetector(TINY), replace(TINY, **change))


def test_training_goes_on_from_a_checkpoint_widened(tmp_path):
    narrow = _trained_tiny_checkpoint(tmp_path / "narrow.pt")
    start = widen(narrow, WIDER).state_dict()

    model, record = train(
        TrainConfig(steps=2, **FAST),
        WIDER,
        out=tmp_path / "wide.pt",
        log=lambda _line: None,
        initial=load_checkpoint(tmp_path / "narrow.pt"),
    )

    # it started from the narrow weights (the untouched layers' weights moved by two Adam steps at most)
    step = 2 * TrainConfig().learning_rate * 1.01
    torch.testing.assert_close(model.stem[0].weight, start["stem.0.weight"], rtol=0, atol=step)
    assert list(record["architecture"]["stage_channels"]) == [12, 16, 24]
    assert list(record["initialized_from"]["architecture"]["stage_channels"]) == [8, 16, 16]
    assert record["initialized_from"]["steps"] == 2


def test_the_command_line_refuses_to_narrow_a_checkpoint(tmp_path, capsys):
    _trained_tiny_checkpoint(tmp_path / "narrow.pt")

    with pytest.raises(SystemExit):
        main(["--init", str(tmp_path / "narrow.pt"), "--head-channels", "4", "--out", str(tmp_path / "x.pt")])

    assert "cannot narrow" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
