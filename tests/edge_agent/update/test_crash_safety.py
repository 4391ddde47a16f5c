"""The agent is SIGKILLed in every state of the update machine and, on restart, ends consistent.

A device has package v1 committed in slot a. For every state (and again right after every state's work) a real
updater process (tests/edge_agent/update/driver.py) runs a deploy of v2 with EDGE_AGENT_UPDATE_PAUSE_IN set to
that point, is SIGKILLed there, and a new Updater's resume() must leave: the record idle with a final ack for the
deploy (healthy, failed or rolled_back) reported; the active pointer on a committed slot whose package verifies,
holding v2 only when the deploy was committed and v1 otherwise; no half-written slot anywhere.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

import fleet_protocol as fp
from edge_agent.update import PAUSE_ENV, SlotStore, State
from edge_agent.update.machine import load_record
from tests.edge_agent.update.helpers import (
    DEVICE_ID,
    Pipeline,
    copy_tree,
    make_deploy,
    make_updater,
    private_key_pem,
    read_acks,
    scene,
)

REPO = Path(__file__).resolve().parents[3]
BEFORE_ACTIVATE = ["download", "verify", "decrypt", "install", "selftest"]

# pause point -> (scenario, the final ack the deploy must end with after the restart)
CASES = {
    # Nothing ran yet: the restarted updater carries the deploy on to its end.
    **{point: ("healthy", "healthy") for state in BEFORE_ACTIVATE for point in (state, f"{state}:done")},
    **{point: ("healthy", "rolled_back") for point in ("activate", "activate:done", "observe", "observe:done")},
    **{point: ("healthy", "healthy") for point in ("commit", "commit:done", "idle")},
    "rollback": ("unhealthy", "rolled_back"),
    "rollback:done": ("unhealthy", "rolled_back"),
    "failure": ("tampered", "failed"),
    "failure:done": ("tampered", "failed"),
}


def test_every_state_of_the_machine_has_a_pause_point():
    assert {point.split(":")[0] for point in CASES} == {state.value for state in State}


@pytest.fixture(scope="module")
def killed(tmp_path_factory, keyring, device, packages):
    """Every case's state dir after its driver was SIGKILLed at its pause point (all drivers run side by side)."""
    root = tmp_path_factory.mktemp("crash")
    base = root / "base" / "state"
    acks: list = []
    v1 = make_deploy(root / "blobs", packages[1], device.public_key(), 1, scene_configs=[scene("cam-1", 1)])
    updater = make_updater(base, keyring, device, {v1.command.command_id: v1.blob}, Pipeline(), acks)
    updater.handle(v1.command)
    assert acks[-1].state == fp.AckState.HEALTHY

    key_path = root / "device.pem"
    key_path.write_bytes(private_key_pem(device))
    scenarios = {}
    for name, fps, tamper in (("healthy", 10.0, False), ("unhealthy", 0.0, False), ("tampered", 10.0, True)):
        v2 = make_deploy(
            root / "blobs" / name,
            packages[2],
            device.public_key(),
            2,
            command_id="deploy-v2",
            observe_s=0.3,
            scene_configs=[scene("cam-1", 3, 2)],
            tamper=tamper,
        )
        scenarios[name] = {
            "trusted": keyring.export_public(),
            "device_key": str(key_path),
            "device_id": DEVICE_ID,
            "command": msgspec.json.encode(v2.command).decode(),
            "blob": str(v2.blob),
            "fps": fps,
        }

    started = {}
    for index, (point, (scenario, _)) in enumerate(CASES.items()):
        case = root / f"case-{index}"
        copy_tree(base, case / "state")
        setup = dict(scenarios[scenario], acks=str(case / "acks.jsonl"))
        (case / "setup.json").write_text(json.dumps(setup))
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.edge_agent.update.driver",
                str(case / "state"),
                str(case / "setup.json"),
                "deploy",
            ],
            cwd=REPO,
            env={**os.environ, PAUSE_ENV: point},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        started[point] = (case, process)

    deadline = time.monotonic() + 120
    for point, (case, process) in started.items():
        paused = case / "state" / "paused"
        while not (paused.exists() and paused.read_text() == point):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = process.communicate()[0].decode(errors="replace")
                pytest.fail(f"the driver never paused in {point}:\n{output[-3000:]}")
            time.sleep(0.02)
    for process in (process for _, process in started.values()):
        process.send_signal(signal.SIGKILL)
    for _, process in started.values():
        process.communicate()
        assert process.returncode == -signal.SIGKILL
    return {point: case for point, (case, _) in started.items()}


@pytest.mark.parametrize("point", list(CASES))
def test_a_restart_after_a_kill_ends_committed_or_rolled_back(killed, keyring, device, point):
    case = killed[point]
    state_dir = case / "state"
    expected = CASES[point][1]
    assert load_record(state_dir).state == State(point.split(":")[0])  # it died in that state

    pipeline, acks = Pipeline(), []
    # The restarted agent can still fetch the deploy's blob (the platform serves it until the command is final).
    blob = Path(json.loads((case / "setup.json").read_text())["blob"])
    updater = make_updater(state_dir, keyring, device, {"deploy-v2": blob}, pipeline, acks)
    updater.resume()

    # The machine is idle, and the deploy's final ack was reported (by the killed process or on resume).
    record = load_record(state_dir)
    assert record.state == State.IDLE and updater.state == "idle"
    assert record.last["command_id"] == "deploy-v2" and record.last["reported"]
    assert record.last["state"] == expected, record.last
    assert updater.last_command_id == "deploy-v2" and updater.outcome[0] == expected
    sent = read_acks(case / "acks.jsonl") + [msgspec.to_builtins(ack) for ack in acks]
    final = [ack for ack in sent if ack["command_id"] == "deploy-v2" and ack["state"] in fp.TERMINAL_ACK_STATES]
    assert final and {ack["state"] for ack in final} == {expected}
    if point.split(":")[0] in ("activate", "observe"):
        assert f"interrupted by a restart in {point.split(':')[0]}" in record.last["reason"]

    # The active pointer names a committed slot whose package verifies: v2 if committed, else v1.
    store = SlotStore(state_dir, updater.trusted_keys)
    active_slot, previous = store.pointer()
    version = 2 if expected == "healthy" else 1
    model = store.load(active_slot)
    assert (model.version, model.package.manifest.version) == (version, version)
    assert store.info(active_slot)["committed"]
    assert len(model.scene_configs["cam-1"].zones) == (3 if version == 2 else 1)  # zones switch with the model
    assert updater.active() == model
    assert [slot.slot for slot in updater.slots() if slot.active] == [active_slot]
    if expected == "healthy":
        assert (active_slot, previous) == ("b", "a") and store.load("a").version == 1
    else:
        assert (active_slot, previous) == ("a", None)
        assert store.info("b") is None  # the failed slot is gone, never a rollback target
    leftovers = [p.name for p in state_dir.iterdir() if p.name.startswith((".install-", ".trash-"))]
    assert leftovers == []
    # Rolling back on resume switched the pipeline to the old slot, carrying the deploy on switched it to the
    # new one; a restart after the switch was confirmed needs no switch.
    rolled_back = point.split(":")[0] in ("activate", "observe", "rollback")
    carried_on = point.split(":")[0] in BEFORE_ACTIVATE
    assert [m.slot for m in pipeline.activated] == (["a"] if rolled_back else ["b"] if carried_on else [])

    # A second restart changes nothing and reports nothing new.
    again = make_updater(state_dir, keyring, device, {}, Pipeline(), acks_again := [])
    again.resume()
    assert acks_again == [] and store.pointer() == (active_slot, previous)
