"""The update state machine end to end on real packages: deploys, refusals, self-test, observe window, rollback."""

from pathlib import Path

import pytest

import fleet_protocol as fp
from edge_agent.update import TRANSITIONS, Outcome, State, Updater
from model_store.crypto import Keyring
from tests.edge_agent.update.helpers import Pipeline, device_key, make_deploy, make_updater, scene
from tests.edge_agent.update.packages import package_tar


class Env:
    """One device: its state dir, pipeline, acks, and an Updater over them (re-created to simulate a restart)."""

    def __init__(self, tmp_path: Path, keyring: Keyring, key):
        self.root = tmp_path
        self.keyring = keyring
        self.key = key
        self.blobs: dict[str, Path] = {}
        self.pipeline = Pipeline()
        self.acks: list[fp.CommandAckBody] = []
        self.updater = self.restart()

    def restart(self, **options) -> Updater:
        self.updater = make_updater(
            self.root / "state", self.keyring, self.key, self.blobs, self.pipeline, self.acks, **options
        )
        return self.updater

    def deploy(self, tar: bytes, version: int, public_key=None, **options) -> fp.DeployCommand:
        public_key = public_key or self.key.public_key()
        deploy = make_deploy(self.root / "blobs", tar, public_key, version, **options)
        self.blobs[deploy.command.command_id] = deploy.blob
        return deploy.command

    def run(self, command) -> tuple[fp.AckState, str]:
        self.updater.handle(command)
        final = self.acks[-1]
        assert final.command_id == command.command_id
        assert (final.state, final.reason) == self.updater.outcome
        assert self.updater.state == "idle" and self.updater.command_id is None
        return final.state, final.reason

    def acked(self, command_id: str) -> list[str]:
        return [ack.state.value for ack in self.acks if ack.command_id == command_id]

    def slots(self) -> dict[str, tuple[int, bool]]:
        return {slot.slot: (slot.version, slot.active) for slot in self.updater.slots()}


@pytest.fixture
def env(tmp_path, keyring, device) -> Env:
    return Env(tmp_path, keyring, device)


def test_transition_table_sends_every_failure_to_rollback_or_failure():
    failing = {state: target for (state, outcome), target in TRANSITIONS.items() if outcome == Outcome.FAIL}
    for state in State:
        if state not in (State.IDLE, State.FAILURE):
            assert state in failing, f"{state} has no failure edge"
    assert set(failing.values()) <= {State.ROLLBACK, State.FAILURE}
    for state in (State.DOWNLOAD, State.VERIFY, State.DECRYPT, State.INSTALL, State.SELFTEST):
        assert failing[state] == State.FAILURE  # the running model was never touched
    for state in (State.ACTIVATE, State.OBSERVE, State.COMMIT):
        assert failing[state] == State.ROLLBACK
    reachable, frontier = {State.IDLE}, [State.IDLE]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source == state and target not in reachable:
                reachable.add(target)
                frontier.append(target)
    assert reachable == set(State)


def test_two_deploys_fill_slots_a_then_b_and_a_rollback_returns_to_a(env, packages):
    first = env.deploy(packages[1], 1)
    assert env.run(first)[0] == fp.AckState.HEALTHY
    assert env.acked(first.command_id)[0] == "downloading"
    assert env.acked(first.command_id)[-4:] == ["downloading", "verifying", "installed", "healthy"]
    progress = [ack.progress for ack in env.acks if ack.state == fp.AckState.DOWNLOADING]
    assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 100
    active = env.updater.active()
    assert (active.slot, active.model, active.version, active.runtime) == ("a", "park-detector", 1, "reference")
    assert active.package.manifest.version == 1
    assert env.pipeline.activated == [active]

    second = env.deploy(packages[2], 2)
    state, note = env.run(second)
    assert state == fp.AckState.HEALTHY and "park-detector v2 committed in slot b" in note
    assert env.slots() == {"a": (1, False), "b": (2, True)}
    assert env.updater.active().package.manifest.version == 2

    rollback = fp.RollbackCommand(command_id="rollback-1", reason="operator asked")
    state, reason = env.run(rollback)
    assert state == fp.AckState.ROLLED_BACK and "operator asked" in reason and "slot a" in reason
    assert env.slots() == {"a": (1, True), "b": (2, False)}
    assert env.pipeline.activated[-1].slot == "a" and env.pipeline.activated[-1].version == 1

    # The previous slot is used up: a second rollback has nowhere to go and changes nothing.
    state, reason = env.run(fp.RollbackCommand(command_id="rollback-2"))
    assert state == fp.AckState.FAILED and "no previous committed slot" in reason
    assert env.updater.active().slot == "a"

    # A restart finds the same active slot, its package verified again.
    restarted = env.restart()
    restarted.resume()
    assert restarted.active().slot == "a" and restarted.active().package.manifest.version == 1


def test_a_version_downgrade_is_refused(env, packages):
    assert env.run(env.deploy(packages[2], 2))[0] == fp.AckState.HEALTHY
    state, reason = env.run(env.deploy(packages[1], 1))
    assert state == fp.AckState.FAILED
    assert "lower than the installed version 2" in reason
    assert env.slots() == {"a": (2, True)}
    assert len(env.pipeline.activated) == 1


def test_a_tampered_ciphertext_is_refused_at_verify(env, packages):
    assert env.run(env.deploy(packages[1], 1))[0] == fp.AckState.HEALTHY
    command = env.deploy(packages[2], 2, tamper=True)
    state, reason = env.run(command)
    assert state == fp.AckState.FAILED and reason.startswith("verify: blob sha256 mismatch")
    assert "installed" not in env.acked(command.command_id)
    assert env.slots() == {"a": (1, True)} and len(env.pipeline.activated) == 1


def test_a_package_signed_by_an_untrusted_key_is_refused(env, packages, tmp_path):
    assert env.run(env.deploy(packages[1], 1))[0] == fp.AckState.HEALTHY
    stranger = Keyring.create(tmp_path / "stranger")
    state, reason = env.run(env.deploy(package_tar(stranger, 2, seed=2), 2))
    assert state == fp.AckState.FAILED and reason.startswith("verify: signature")
    assert env.slots() == {"a": (1, True)}


@pytest.mark.parametrize("wrong", ["key", "device_id"])
def test_a_content_key_wrapped_for_another_device_is_refused_at_decrypt(env, packages, wrong):
    if wrong == "key":
        command = env.deploy(packages[1], 1, public_key=device_key().public_key())
    else:
        command = env.deploy(packages[1], 1, device_id="dev-9999")
    state, reason = env.run(command)
    assert state == fp.AckState.FAILED and reason.startswith("decrypt: wrapped content key: authentication failed")
    assert env.updater.active() is None and env.slots() == {}


def test_a_failing_selftest_keeps_the_old_model(env, keyring, packages):
    assert env.run(env.deploy(packages[1], 1))[0] == fp.AckState.HEALTHY
    broken = package_tar(keyring, 2, seed=2, corrupt_selftest=True)
    command = env.deploy(broken, 2)
    state, reason = env.run(command)
    assert state == fp.AckState.FAILED
    assert reason.startswith("selftest on reference: output out differs from the reference by 9 LSB")
    assert env.slots() == {"a": (1, True)}  # the self-tested slot b is discarded
    assert len(env.pipeline.activated) == 1 and env.updater.active().version == 1


@pytest.mark.parametrize(
    ("problem", "expected"),
    [("fps", "fps is below the minimum"), ("errors", "errors within"), ("frozen", "no frames processed")],
)
def test_an_unhealthy_observe_window_rolls_back(env, packages, problem, expected):
    assert env.run(env.deploy(packages[1], 1))[0] == fp.AckState.HEALTHY
    if problem == "fps":
        env.pipeline.fps = 0.1
    elif problem == "errors":
        env.pipeline.errors_per_sample = 1
    else:
        env.pipeline.health = lambda: {"fps": 10.0, "errors": 0, "frames": 100, "detections": 0}
        env.restart()
    state, reason = env.run(env.deploy(packages[2], 2))
    assert state == fp.AckState.ROLLED_BACK and reason.startswith("observe:") and expected in reason
    assert "back to slot a (park-detector v1)" in reason
    assert [(model.slot, model.version) for model in env.pipeline.activated] == [("a", 1), ("b", 2), ("a", 1)]
    assert env.slots() == {"a": (1, True)}  # the failed slot is discarded, never a rollback target
    assert env.run(fp.RollbackCommand(command_id="rb"))[0] == fp.AckState.FAILED


def test_a_pipeline_refusing_the_new_model_rolls_back(env, packages):
    assert env.run(env.deploy(packages[1], 1))[0] == fp.AckState.HEALTHY

    def activate(model):
        env.pipeline.activated.append(model)
        if model is not None and model.version == 2:
            raise RuntimeError("runtime would not load")

    env.pipeline.activate = activate
    env.restart()
    state, reason = env.run(env.deploy(packages[2], 2))
    assert state == fp.AckState.ROLLED_BACK and "runtime would not load" in reason
    assert env.updater.active().version == 1 and env.slots() == {"a": (1, True)}


def test_scene_configs_switch_and_roll_back_together_with_the_model(env, packages):
    v1 = env.deploy(packages[1], 1, scene_configs=[scene("cam-1", spaces=1, version=1)])
    assert env.run(v1)[0] == fp.AckState.HEALTHY
    assert env.updater.active().scene_version == 1
    assert len(env.updater.active().scene_configs["cam-1"].zones) == 1

    # Scene-only update: same model bytes, new zones for cam-1 and a new camera; no self-test, no download.
    update = fp.SceneConfigCommand(
        command_id="scene-2", version=2, scene_configs=[scene("cam-1", 3, 2), scene("cam-2", 2, 1)], observe_s=0.2
    )
    state, note = env.run(update)
    assert state == fp.AckState.HEALTHY and "park-detector v1 committed in slot b" in note
    assert env.acked("scene-2") == ["verifying", "installed", "healthy"]
    active = env.updater.active()
    assert (active.slot, active.version, active.scene_version) == ("b", 1, 2)
    assert active.package.manifest_bytes == env.pipeline.activated[0].package.manifest_bytes
    assert {camera: len(config.zones) for camera, config in active.scene_configs.items()} == {"cam-1": 3, "cam-2": 2}

    # A model deploy keeps the zones it does not replace.
    v2 = env.deploy(packages[2], 2, scene_configs=[scene("cam-2", 1, 3)])
    assert env.run(v2)[0] == fp.AckState.HEALTHY
    active = env.updater.active()
    assert (active.slot, active.version, active.scene_version) == ("a", 2, 3)
    assert {camera: len(config.zones) for camera, config in active.scene_configs.items()} == {"cam-1": 3, "cam-2": 1}

    # Rolling back restores the previous model AND its zones, in one switch.
    assert env.run(fp.RollbackCommand(command_id="rb"))[0] == fp.AckState.ROLLED_BACK
    active = env.updater.active()
    assert (active.slot, active.version, active.scene_version) == ("b", 1, 2)
    assert {camera: len(config.zones) for camera, config in active.scene_configs.items()} == {"cam-1": 3, "cam-2": 2}


def test_an_unhealthy_scene_update_rolls_back_the_zones(env, packages):
    assert env.run(env.deploy(packages[1], 1, scene_configs=[scene("cam-1", 1)]))[0] == fp.AckState.HEALTHY
    env.pipeline.errors_per_sample = 1
    state, _ = env.run(fp.SceneConfigCommand(command_id="scene", version=2, scene_configs=[scene("cam-1", 4, 2)]))
    assert state == fp.AckState.ROLLED_BACK
    active = env.updater.active()
    assert (active.slot, active.scene_version, len(active.scene_configs["cam-1"].zones)) == ("a", 1, 1)


def test_a_scene_update_before_any_model_installs_a_scene_only_slot(env):
    state, _ = env.run(fp.SceneConfigCommand(command_id="scene", version=1, scene_configs=[scene()], observe_s=0.1))
    assert state == fp.AckState.HEALTHY
    active = env.updater.active()
    assert (active.slot, active.package, active.model, active.version, active.scene_version) == ("a", None, "", 0, 1)
    assert env.slots() == {"a": (0, True)}


def bow_tie() -> dict:
    config = scene("cam-1", 1, 2)
    config["zones"][0]["polygon"] = [[10, 10], [60, 60], [60, 10], [10, 60]]
    return config


def outside_the_frame() -> dict:
    config = scene("cam-1", 1, 2)
    config["zones"][0]["polygon"][1] = [700, 10]
    return config


def unknown_field() -> dict:
    return {**scene("cam-1", 1, 2), "colour": "red"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (bow_tie, "intersects itself"),
        (unknown_field, "unknown fields ['colour']"),
        (outside_the_frame, "outside the 640x480 frame"),
    ],
)
def test_an_invalid_scene_config_changes_nothing(env, packages, raw, expected):
    assert env.run(env.deploy(packages[1], 1, scene_configs=[scene("cam-1", 2)]))[0] == fp.AckState.HEALTHY
    before = env.updater.active()
    state, reason = env.run(fp.SceneConfigCommand(command_id="bad", version=2, scene_configs=[raw()]))
    assert state == fp.AckState.FAILED and reason.startswith("verify: scene config") and expected in reason
    assert env.updater.active() == before and env.slots() == {"a": (1, True)} and len(env.pipeline.activated) == 1


def test_an_older_scene_version_is_refused(env):
    assert env.run(fp.SceneConfigCommand(command_id="s3", version=3, scene_configs=[scene()]))[0] == "healthy"
    state, reason = env.run(fp.SceneConfigCommand(command_id="s2", version=2, scene_configs=[scene()]))
    assert state == fp.AckState.FAILED and "scene version 2 is lower than the installed 3" in reason


def test_a_final_ack_that_could_not_be_sent_is_sent_again_after_a_restart(env, packages):
    command = env.deploy(packages[1], 1)

    def report(ack):
        if ack.state in fp.TERMINAL_ACK_STATES:
            raise ConnectionError("broker gone")
        env.acks.append(ack)

    env.restart(report=report).handle(command)
    assert env.updater.outcome[0] == fp.AckState.HEALTHY and env.acks[-1].state == fp.AckState.INSTALLED
    env.restart().resume()
    assert (env.acks[-1].command_id, env.acks[-1].state) == (command.command_id, fp.AckState.HEALTHY)
    env.restart().resume()  # sent once is enough
    assert [ack.state for ack in env.acks].count(fp.AckState.HEALTHY) == 1


def test_a_deploy_interrupted_before_activation_ends_failed_when_its_command_expired(env, packages):
    import time

    import msgspec

    from edge_agent.update.machine import Record, save_record

    assert env.run(env.deploy(packages[1], 1))[0] == fp.AckState.HEALTHY
    command = msgspec.structs.replace(env.deploy(packages[2], 2), expires_at=time.time() - 1)
    # given: the agent died while verifying this deploy, and came back after the command's deadline
    save_record(
        env.root / "state",
        Record(
            state=State.VERIFY, command={**msgspec.to_builtins(command), "name": "deploy"}, target="b", previous="a"
        ),
    )
    restarted = env.restart()
    restarted.resume()
    assert restarted.outcome[0] == fp.AckState.FAILED
    assert restarted.outcome[1] == "interrupted by a restart in verify; the command has expired"
    assert env.slots() == {"a": (1, True)}
