"""Upload checks: only a checkpoint that loads, builds and runs as a detector of the family's labels passes."""

import io

import pytest
import torch

from fleet_server.registry.checkpoints import CheckpointError, check_input_shape, inspect_checkpoint
from tests.fleet_server.registry.conftest import LABELS, torch_file


def _payload(checkpoint_bytes: bytes) -> dict:
    return torch.load(io.BytesIO(checkpoint_bytes), weights_only=True)


def _without_first(state_dict: dict) -> dict:
    return dict(list(state_dict.items())[1:])


def test_the_shipped_detector_passes(checkpoint_bytes):
    info = inspect_checkpoint(io.BytesIO(checkpoint_bytes), labels=LABELS, input_shape=(1, 3, 240, 320))
    assert info.num_classes == 2
    assert 500_000 < info.parameters < 1_000_000
    assert info.fp32_bytes == 4 * info.parameters
    assert info.architecture["stage_channels"] == [32, 64, 128]


@pytest.mark.parametrize(
    ("make_file", "message"),
    [
        (lambda data: io.BytesIO(b"\x00" * 10_000), "not a PyTorch checkpoint file"),
        (lambda data: io.BytesIO(bytes(range(256)) * 50), "not a PyTorch checkpoint file"),
        (lambda data: io.BytesIO(data[: len(data) // 2]), "not a PyTorch checkpoint file"),
        (lambda data: io.BytesIO(b""), "not a PyTorch checkpoint file"),
        (lambda data: torch_file(torch.zeros(3)), "not a smart-park detector checkpoint"),
        (lambda data: torch_file({"state_dict": {}}), "not a smart-park detector checkpoint"),
        (lambda data: torch_file({"config": {}, "state_dict": [1, 2]}), "'state_dict' must map"),
        (lambda data: torch_file({"config": {"colour": 3}, "state_dict": {}}), "'config' is not a DetectorConfig"),
        (
            lambda data: torch_file({**_payload(data), "config": {"stem_channels": 100_000}}),
            "channel widths must be integers",
        ),
        (
            lambda data: torch_file({**_payload(data), "config": {**_payload(data)["config"], "head_channels": 16}}),
            "do not fit the architecture",
        ),
        (
            lambda data: torch_file({**_payload(data), "state_dict": _without_first(_payload(data)["state_dict"])}),
            "do not fit the architecture",
        ),
    ],
    ids=["zeros", "random", "truncated", "empty", "a tensor", "no config", "bad weights", "bad config", "huge",
         "shape mismatch", "missing weight"],
)  # fmt: skip
def test_anything_else_is_refused_with_a_reason(checkpoint_bytes, make_file, message):
    with pytest.raises(CheckpointError, match=message):
        inspect_checkpoint(make_file(checkpoint_bytes), labels=LABELS, input_shape=(1, 3, 240, 320))


def test_non_finite_weights_are_refused(checkpoint_bytes):
    payload = _payload(checkpoint_bytes)
    name = next(key for key, value in payload["state_dict"].items() if value.is_floating_point())
    payload["state_dict"][name] = torch.full_like(payload["state_dict"][name], float("nan"))
    with pytest.raises(CheckpointError, match="NaN"):
        inspect_checkpoint(torch_file(payload), labels=LABELS, input_shape=(1, 3, 240, 320))


def test_the_labels_must_match_the_classes(checkpoint_bytes):
    with pytest.raises(CheckpointError, match=r"3 label.*detects 2 class"):
        inspect_checkpoint(io.BytesIO(checkpoint_bytes), labels=["car", "person", "bike"], input_shape=(1, 3, 64, 64))


@pytest.mark.parametrize(
    "shape", [(1, 3, 240), (2, 3, 240, 320), (1, 1, 240, 320), (1, 3, 250, 320), (1, 3, 16, 16), (1, 3, 4096, 64)]
)
def test_input_shapes_are_checked(shape):
    with pytest.raises(CheckpointError, match="input"):
        check_input_shape(shape)


def test_a_smaller_input_shape_runs(checkpoint_bytes):
    info = inspect_checkpoint(io.BytesIO(checkpoint_bytes), labels=LABELS, input_shape=[1, 3, 64, 96])
    assert info.input_shape == (1, 3, 64, 96)
