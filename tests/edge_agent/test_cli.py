import json
import subprocess

import pytest

from tests.helpers import BIN


def _agent(*args, **kwargs):
    return subprocess.run([str(BIN / "edge-agent"), *args], capture_output=True, text=True, check=False, **kwargs)


@pytest.mark.parametrize("command", [[], ["enroll"], ["run"], ["status"]])
def test_every_command_has_help(command):
    result = _agent(*command, "--help")
    assert result.returncode == 0
    assert "usage: edge-agent" in result.stdout


def test_run_and_status_without_enrollment_say_what_to_do(tmp_path):
    for command in ("run", "status"):
        result = _agent("--state-dir", str(tmp_path), command)
        assert result.returncode == 2
        assert "edge-agent enroll" in result.stderr


def test_enroll_against_an_unreachable_platform_fails_cleanly(tmp_path):
    result = _agent(
        "--state-dir", str(tmp_path), "enroll", "--server", "http://127.0.0.1:9", "--token", "t", "--kind",
        "smart_box_cpu",
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot reach the platform" in result.stderr
    assert not (tmp_path / "identity.json").exists()


def test_status_reports_identity_without_secrets(tmp_path):
    identity = {
        "device_id": "d1", "name": "box", "kind": "smart_box_cpu", "site": "north", "server_url": "http://x",
        "mqtt_url": "mqtt://h:1", "mqtt_username": "d1", "mqtt_password": "s3cret-value", "mqtt_client_id": "a",
        "keepalive_s": 30, "telemetry_interval_s": 10.0, "enrolled_at": 1.0,
    }  # fmt: skip
    (tmp_path / "identity.json").write_text(json.dumps(identity))
    result = _agent("--state-dir", str(tmp_path), "status", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["device_id"] == "d1"
    assert report["running"] is False
    assert report["active_model"] == ""
    assert "s3cret-value" not in result.stdout
    (tmp_path / "runtime.json").write_text(
        json.dumps({"pid": 1, "stopped_at": 2.0, "active_model": "park-detector v3 on cpu-int8 (slot b, zones v2)",
                    "update_state": "idle", "outbox_depth": 12})
    )  # fmt: skip
    text = _agent("--state-dir", str(tmp_path), "status").stdout
    assert "park-detector v3 on cpu-int8 (slot b, zones v2)" in text and "12 events waiting" in text
