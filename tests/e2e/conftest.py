import json
import urllib.request

import pytest

from fleet_server.devices.models import Site
from fleet_server.devices.services import create_claim_token
from fleet_server.tenants.models import Tenant
from fleet_server.tenants.services import issue_api_key
from tests.conftest import edge_agent, forget_mqtt_session, manage


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
    tenant = Tenant.objects.create(name="Acme Parks", slug="acme")
    return Site.objects.create(tenant=tenant, name="North Park", slug="north")


@pytest.fixture
def rest(live_server, park):
    _, key = issue_api_key(park.tenant, "e2e")
    return RestClient(live_server.url, key)


@pytest.fixture
def enroll(live_server, park, tmp_path, processes, platform_env):
    """Enroll a real agent through the CLI and the live server; returns its state dir and device id."""

    def _enroll(name: str, kind: str = "smart_box_cpu"):
        _, token = create_claim_token(park)
        state_dir = tmp_path / name
        argv = edge_agent(state_dir, "enroll", "--server", live_server.url, "--token", token, "--kind", kind)
        result = processes_run([*argv, "--name", name], platform_env)
        assert result.returncode == 0, result.stderr
        identity = json.loads((state_dir / "identity.json").read_text())
        return state_dir, identity["device_id"]

    return _enroll


def processes_run(argv, env):
    import subprocess

    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def ingest_process(processes, platform_env, share_group):
    """A real `manage.py mqtt_ingest` process on the test database; its broker session is removed after."""
    client_id = f"ingest-{share_group}"
    yield processes.start("ingest", manage("mqtt_ingest", "--client-id", client_id), platform_env)
    processes.stop_all()
    forget_mqtt_session(platform_env["MQTT_URL"], client_id)
