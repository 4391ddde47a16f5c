"""A real agent process against the real platform: enroll, come online, die, and be seen offline."""

import signal
import time

import pytest

from tests.conftest import edge_agent
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

KEEPALIVE_S = 4


def _device(rest, device_id) -> dict:
    return rest.get(f"/api/v1/devices/{device_id}/")


def test_an_agent_enrolls_comes_online_and_its_last_will_marks_it_offline(
    enroll, ingest_process, processes, platform_env, rest
):
    # given: an agent enrolled through the CLI and the enrollment API
    state_dir, device_id = enroll("gate-box")
    assert _device(rest, device_id)["online"] is False

    # when: it runs
    processes.start("agent", edge_agent(state_dir, "run", "--keepalive", str(KEEPALIVE_S),
                                        "--telemetry-interval", "1"), platform_env)  # fmt: skip

    # then: the business unit sees it online, with its hardware and telemetry
    device = wait_until(lambda: (d := _device(rest, device_id))["online"] and d, timeout=20, message="online")
    assert device["agent_version"] and device["hardware_info"]["cpu_count"] >= 1
    samples = wait_until(lambda: rest.get(f"/api/v1/devices/{device_id}/telemetry/"), timeout=10, message="telemetry")
    assert 0 <= samples[-1]["cpu_percent"] <= 100 and samples[-1]["memory_percent"] > 0

    # when: the agent dies without a word
    processes.signal("agent", signal.SIGKILL)
    killed_at = time.monotonic()

    # then: its Last Will shows it offline within 1.5 keepalives
    wait_until(lambda: not _device(rest, device_id)["online"], timeout=1.5 * KEEPALIVE_S, message="offline via LWT")
    assert time.monotonic() - killed_at <= 1.5 * KEEPALIVE_S


def test_sigterm_stops_the_agent_cleanly_and_says_offline(enroll, ingest_process, processes, platform_env, rest):
    state_dir, device_id = enroll("lobby-camera", kind="integrated_camera")
    agent = processes.start("agent", edge_agent(state_dir, "run", "--keepalive", "30"), platform_env)
    wait_until(lambda: _device(rest, device_id)["online"], timeout=20, message="online")

    processes.signal("agent", signal.SIGTERM)

    assert agent.wait(10) == 0
    # A clean disconnect fires no Last Will: the agent published 'offline' itself, at once.
    wait_until(lambda: not _device(rest, device_id)["online"], timeout=5, message="offline")
    status = processes_status(state_dir, platform_env)
    assert '"running": false' in status


def processes_status(state_dir, env) -> str:
    import subprocess

    return subprocess.run(
        edge_agent(state_dir, "status", "--json"), env=env, capture_output=True, text=True, check=True
    ).stdout
