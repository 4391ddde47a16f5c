"""A command saved while the broker is unreachable reaches the device once the broker is back.

Real processes throughout: Mosquitto, `manage.py mqtt_ingest`, a Celery worker with beat on Redis,
and an agent; the test only saves the command and watches the database.
"""

import pytest

from fleet_server.devices.models import Command, CommandState, Device
from fleet_server.devices.services import send_command
from fleet_server.mqtt_bridge.models import OutboxMessage
from tests.conftest import edge_agent, forget_mqtt_session, manage
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def stack(mosquitto, processes, platform_env, share_group, celery_worker_process):
    """Ingest and a Celery worker (with beat) against a private broker the test can stop."""
    env = {**platform_env, "MQTT_URL": mosquitto.url}
    processes.start("ingest", manage("mqtt_ingest", "--client-id", f"ingest-{share_group}"), env)
    celery_worker_process(MQTT_URL=mosquitto.url)
    yield env
    processes.stop_all()
    forget_mqtt_session(mosquitto.url, f"ingest-{share_group}")


def test_a_command_saved_while_the_broker_is_down_is_delivered_when_it_returns(
    live_server, enroll, mosquitto, stack, processes
):
    # given: an agent online through a broker the test controls
    state_dir, device_id = enroll("south-lot-box")
    identity = (state_dir / "identity.json").read_text().replace("127.0.0.1:1883", f"127.0.0.1:{mosquitto.port}")
    (state_dir / "identity.json").write_text(identity)
    processes.start("agent", edge_agent(state_dir, "run", "--reconnect-max-delay", "1"), stack)
    wait_until(lambda: Device.objects.get(pk=device_id).online, timeout=30, message="agent online")

    # when: the broker goes away and an operator sends a command
    mosquitto.stop()
    command = send_command(Device.objects.get(pk=device_id), "ping")

    # then: the worker tries, fails, and keeps the message
    wait_until(
        lambda: OutboxMessage.objects.filter(correlation_id=command.pk, attempts__gte=1).exists(),
        timeout=20, message="a failed publish attempt",
    )  # fmt: skip
    assert not OutboxMessage.objects.filter(correlation_id=command.pk, published_at__isnull=False).exists()
    assert Command.objects.get(pk=command.pk).state == CommandState.QUEUED

    # when: the broker comes back
    mosquitto.start()

    # then: the command is published, run by the agent and its answer recorded
    wait_until(
        lambda: Command.objects.get(pk=command.pk).state == CommandState.DONE, timeout=60, message="the ack"
    )  # fmt: skip
    assert Command.objects.get(pk=command.pk).reason == "pong"
    assert OutboxMessage.objects.filter(correlation_id=command.pk, published_at__isnull=False).exists()
