"""`make demo`'s command on its embedded defaults: three devices online, the shipped detector compressed and
deployed to them, smart-park events in the database, then a clean stop on Ctrl-C."""

import os
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.conftest import manage
from tests.helpers import REPO, free_port, wait_until

pytestmark = pytest.mark.e2e


def test_the_demo_deploys_the_detector_to_three_devices_whose_events_arrive_and_stops_cleanly(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "MQTT_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    # Its own data folder (SQLite, agents' state, logs) and Redis database; no MQTT_URL: embedded broker.
    env.update(FLEET_DATA_DIR=str(tmp_path), CELERY_BROKER_URL="redis://127.0.0.1:6379/14", PYTHONUNBUFFERED="1")
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            manage("demo", "--port", str(free_port()), "--telemetry-interval", "2"),
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_until(lambda: "3/3 devices online" in log.read_text(), timeout=120, interval=0.5, message="3 online")
        text = log.read_text()
        assert "embedded amqtt" in text and "login     admin / " in text

        with sqlite3.connect(tmp_path / "fleet.sqlite3") as db:
            kinds = sorted(row[0] for row in db.execute("select kind from devices_device where online"))
            wait_until(
                lambda: db.execute("select count(*) from devices_telemetrysample").fetchone()[0] >= 3,
                timeout=30, message="telemetry",
            )  # fmt: skip
        assert kinds == ["integrated_camera", "smart_box_cpu", "smart_box_fpga"]

        # the shipped detector is compressed, deployed and committed on every device, with no manual step
        wait_until(lambda: "deployed: " in log.read_text(), timeout=300, interval=1, message="the deployment")
        assert "healthy, north-gate-box healthy, south-lot-box healthy" in log.read_text()
        with sqlite3.connect(tmp_path / "fleet.sqlite3") as db:
            wait_until(
                lambda: db.execute("select count(*) from events_event where rule = 'occupancy'").fetchone()[0] >= 3,
                timeout=120, message="occupancy events",
            )  # fmt: skip
            cameras = {row[0] for row in db.execute("select distinct camera from events_event")}
        assert {"lot-a", "gate-in", "lobby"} <= cameras, cameras

        os.killpg(demo.pid, signal.SIGINT)
        assert demo.wait(60) == 0
        assert "demo stopped" in log.read_text()
        time.sleep(0.5)
        leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
        assert leftovers.stdout == "", leftovers.stdout
        # The agents said goodbye before the platform stopped.
        with sqlite3.connect(tmp_path / "fleet.sqlite3") as db:
            assert db.execute("select count(*) from devices_device where online").fetchone()[0] == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
