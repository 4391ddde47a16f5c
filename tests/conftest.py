import os
import uuid
from pathlib import Path

import pytest

from tests.helpers import BIN, REPO, Mosquitto, Processes


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def processes(tmp_path, request):
    children = Processes(tmp_path / "logs")
    yield children
    children.stop_all()
    call = getattr(request.node, "rep_call", None)
    if call is not None and call.failed:
        for name in children.children:
            print(f"----- {name} -----\n{children.log(name)[-4000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def database_url() -> str:
    """The test database as a URL, for child processes (pytest-django renamed it to test_...)."""
    from django.db import connection

    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def share_group() -> str:
    # A group of our own: a stale persistent session left on a shared broker by someone else's
    # ingest in the default group would otherwise take its share of our messages.
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def platform_env(transactional_db, share_group):
    """Environment for platform processes (ingest, Celery) started by a test, on the test database."""
    env = {
        **os.environ,
        "MQTT_SHARED_GROUP": share_group,
        # The platform's real settings module, not the test one (which pins the database name).
        "DJANGO_SETTINGS_MODULE": "fleet_server.settings",
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "MQTT_URL": os.environ["MQTT_URL"],
        "DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}",
    }
    return env


def manage(*args: str) -> list[str]:
    return [str(BIN / "python"), str(REPO / "manage.py"), *args]


def edge_agent(state_dir: Path, *args: str) -> list[str]:
    return [str(BIN / "edge-agent"), "--state-dir", str(state_dir), *args]


def forget_mqtt_session(url: str, client_id: str) -> None:
    """Drop a persistent session from the broker (connect once with a clean session)."""
    import paho.mqtt.client as mqtt

    from fleet_protocol.broker import BrokerAddress

    address = BrokerAddress.from_url(url)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    try:
        client.connect(address.host, address.port)
        client.loop_start()
        client.disconnect()
        client.loop_stop()
    except OSError:
        pass
