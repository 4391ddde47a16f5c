import pytest

from fleet_server.registry.presets import PRESETS, PresetError, resolve_config, scaled_steps, training_steps


def test_each_preset_takes_only_the_settings_that_apply():
    assert "admm_steps" not in resolve_config("int8")
    assert "calibration_frames" not in resolve_config("data-free")
    assert "target_sparsity" in resolve_config("3-bit-sparse")
    assert "target_sparsity" not in resolve_config("3-bit")
    with pytest.raises(PresetError, match="does not take admm_steps"):
        resolve_config("int8", {"admm_steps": 3})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"admm_steps": 0}, "between 1 and"),
        ({"admm_steps": 2.5}, "must be an integer"),
        ({"admm_steps": "3"}, "must be an integer"),
        ({"admm_steps": True}, "must be an integer"),
        ({"learning_rate": 5}, "between"),
        ({"colour": 1}, "does not take colour"),
    ],
)
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(PresetError, match=message):
        resolve_config("3-bit", overrides)


def test_unknown_presets_are_refused():
    with pytest.raises(PresetError, match=r"unknown preset 'fp16'.*int8, 3-bit"):
        resolve_config("fp16")


def test_training_steps_and_the_cli_shorthand():
    config = resolve_config("3-bit-sparse", scaled_steps("3-bit-sparse", 4))
    assert config["admm_steps"] == 4 and config["finetune_steps"] == 1
    assert training_steps(PRESETS["3-bit-sparse"], config) == 4 + 1 + 4 * 1
    assert training_steps(PRESETS["int8"], resolve_config("int8")) == 0
    with pytest.raises(PresetError, match="trains nothing"):
        scaled_steps("data-free", 5)
