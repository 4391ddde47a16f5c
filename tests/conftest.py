import json
import os
import subprocess
import urllib.request
import uuid
from pathlib import Path

import pytest
from hypothesis import settings

from tests.helpers import BIN, REPO, Mosquitto, Processes

# Property tests draw the same examples on every run: CI's verdict is the code's, not the draw's. (A random draw
# once found a random net whose rounding error exceeded test_lowering's statistical bound, which says nothing
# about the change under test.) HYPOTHESIS_PROFILE=explore draws new examples, to hunt for such cases.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


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


# --- a running platform: park, API client, enrolled agents, ingest and worker processes ---


class RestClient:
    """A business unit's view of the platform: plain HTTP with an API key."""

    def __init__(self, base_url: str, api_key: str):
        self.base_url = base_url
        self.api_key = api_key

    def get(self, path: str):
        request = urllib.request.Request(
            self.base_url + path, headers={"Authorization": f"Api-Key {self.api_key}", "Accept": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())


@pytest.fixture
def park(transactional_db):
    from fleet_server.devices.models import Site
    from fleet_server.tenants.models import Tenant

    tenant = Tenant.objects.create(name="Acme Parks", slug="acme")
    return Site.objects.create(tenant=tenant, name="North Park", slug="north")


@pytest.fixture
def rest(live_server, park):
    from fleet_server.tenants.services import issue_api_key

    _, key = issue_api_key(park.tenant, "e2e")
    return RestClient(live_server.url, key)


@pytest.fixture
def enroll(live_server, park, tmp_path, processes, platform_env):
    """Enroll a real agent through the CLI and the live server; returns its state dir and device id."""

    from fleet_server.devices.services import create_claim_token

    def _enroll(name: str, kind: str = "smart_box_cpu"):
        _, token = create_claim_token(park)
        state_dir = tmp_path / name
        argv = edge_agent(state_dir, "enroll", "--server", live_server.url, "--token", token, "--kind", kind)
        result = subprocess.run(
            [*argv, "--name", name], env=platform_env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        identity = json.loads((state_dir / "identity.json").read_text())
        return state_dir, identity["device_id"]

    return _enroll


@pytest.fixture
def ingest_process(processes, platform_env, share_group):
    """A real `manage.py mqtt_ingest` process on the test database; its broker session is removed after."""
    client_id = f"ingest-{share_group}"
    yield processes.start("ingest", manage("mqtt_ingest", "--client-id", client_id), platform_env)
    processes.stop_all()
    forget_mqtt_session(platform_env["MQTT_URL"], client_id)


@pytest.fixture
def celery_worker_process(processes, platform_env, tmp_path):
    """A real Celery worker with beat (fast outbox polling) on the test database and Redis."""

    def _start(**env):
        argv = [str(BIN / "celery"), "--workdir", "platform", "-A", "fleet_server", "worker", "--beat",
                "--loglevel", "INFO", "--concurrency", "1", "--schedule", str(tmp_path / "beat-schedule"),
                "--without-mingle", "--without-gossip"]  # fmt: skip
        return processes.start("worker", argv, {**platform_env, "OUTBOX_POLL_S": "1", "OUTBOX_RETRY_MAX_S": "1", **env})

    return _start
