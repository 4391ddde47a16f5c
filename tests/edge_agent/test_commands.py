import json
import time

import fleet_protocol as fp
from edge_agent.commands import CommandRunner


def _runner(tmp_path):
    acks: list[fp.CommandAckBody] = []
    runner = CommandRunner(tmp_path, ack=acks.append)
    runner.register(fp.PingCommand, lambda command: "pong")
    return runner, acks


def _ping(command_id="c1", **kwargs) -> bytes:
    return fp.encode(fp.envelope(fp.PingCommand(command_id=command_id, **kwargs)))


def test_a_command_is_acknowledged_received_then_done(tmp_path):
    runner, acks = _runner(tmp_path)
    runner.handle(_ping())
    assert [(a.command_id, a.state, a.reason) for a in acks] == [
        ("c1", fp.AckState.RECEIVED, ""),
        ("c1", fp.AckState.DONE, "pong"),
    ]


def test_a_redelivered_command_runs_once_and_repeats_its_outcome(tmp_path):
    calls = []
    runner, _ = _runner(tmp_path)
    runner.register(fp.PingCommand, lambda command: calls.append(command) or "pong")
    runner.handle(_ping())
    # given: the agent restarts, with the remembered ids on disk
    restarted, acks_after = _runner(tmp_path)
    restarted.register(fp.PingCommand, lambda command: calls.append(command) or "pong")
    restarted.handle(_ping())
    assert len(calls) == 1
    assert [(a.state, a.reason) for a in acks_after] == [(fp.AckState.DONE, "pong")]


def test_an_expired_command_is_refused(tmp_path):
    runner, acks = _runner(tmp_path)
    runner.handle(_ping(expires_at=time.time() - 1))
    assert [(a.state, a.reason) for a in acks] == [(fp.AckState.FAILED, "expired before it reached the device")]


def test_an_unknown_command_is_refused_by_id(tmp_path):
    runner, acks = _runner(tmp_path)
    payload = json.dumps(
        {"v": 1, "type": "cmd", "id": "m", "ts": time.time(), "body": {"name": "format_disk", "command_id": "c7"}}
    ).encode()
    runner.handle(payload)
    assert acks[0].command_id == "c7"
    assert acks[0].state == fp.AckState.FAILED
    assert "invalid command" in acks[0].reason


def test_garbage_is_dropped_without_an_answer(tmp_path):
    runner, acks = _runner(tmp_path)
    runner.handle(b"\x00\xff garbage")
    assert acks == []


def test_a_failing_handler_is_reported_not_raised(tmp_path):
    runner, acks = _runner(tmp_path)

    def broken(command):
        raise OSError("disk full")

    runner.register(fp.PingCommand, broken)
    runner.handle(_ping())
    assert acks[-1].state == fp.AckState.FAILED
    assert acks[-1].reason == "OSError: disk full"


def test_a_command_this_agent_has_no_handler_for_is_refused(tmp_path):
    runner, acks = _runner(tmp_path)
    runner.handle(fp.encode(fp.envelope(fp.SetTelemetryIntervalCommand(command_id="c3", interval_s=5))))
    assert acks[-1].state == fp.AckState.FAILED
    assert "cannot run" in acks[-1].reason


def test_a_background_command_runs_on_a_worker_and_can_end_healthy(tmp_path):
    import threading

    from edge_agent.commands import Outcome

    release = threading.Event()
    runner, acks = _runner(tmp_path)
    runner.register(
        fp.RollbackCommand,
        lambda command: release.wait(10) and Outcome(fp.AckState.ROLLED_BACK, "back"),
        background=True,
    )
    payload = fp.encode(fp.envelope(fp.RollbackCommand(command_id="r1")))
    runner.handle(payload)
    # the main loop is free: a ping is answered while the rollback still runs
    runner.handle(_ping("p1"))
    runner.handle(payload)  # a redelivery while it runs is not run twice
    assert [(a.command_id, a.state) for a in acks] == [
        ("r1", fp.AckState.RECEIVED),
        ("p1", fp.AckState.RECEIVED),
        ("p1", fp.AckState.DONE),
    ]
    assert runner.busy()
    release.set()
    runner.shutdown(wait=True)
    assert (acks[-1].command_id, acks[-1].state, acks[-1].reason) == ("r1", fp.AckState.ROLLED_BACK, "back")
    assert not runner.busy()
