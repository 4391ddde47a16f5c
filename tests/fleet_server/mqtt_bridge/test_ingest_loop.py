"""The ingest loop against a real Mosquitto: valid messages land in the database, invalid ones are dropped."""

import threading

import paho.mqtt.client as mqtt
import pytest

import fleet_protocol as fp
from fleet_server.devices.models import Device, TelemetrySample
from fleet_server.mqtt_bridge.ingest import MqttIngest
from tests.fleet_server.conftest import make_device
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ingest(mosquitto, settings):
    settings.MQTT_URL = mosquitto.url
    worker = MqttIngest("test-ingest", share_group="ingest", batch_size=50, flush_s=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    assert worker.wait_subscribed(10)
    yield worker
    worker.stop()
    thread.join(10)


@pytest.fixture
def publisher(mosquitto):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def test_status_and_telemetry_arrive_and_garbage_is_counted(ingest, publisher, site):
    device = make_device(site)
    publisher.publish(fp.topic(device.pk, fp.Channel.STATUS), b"{not json", qos=1)
    publisher.publish(fp.topic(device.pk, fp.Channel.TELEMETRY), fp.encode(fp.envelope(fp.StatusBody(state="online"))))
    publisher.publish(
        fp.topic(device.pk, fp.Channel.STATUS),
        fp.encode(fp.envelope(fp.StatusBody(state="online", agent_version="9.9"))),
        qos=1,
        retain=True,
    )
    publisher.publish(
        fp.topic(device.pk, fp.Channel.TELEMETRY),
        fp.encode(fp.envelope(fp.TelemetryBody(cpu_percent=5, memory_percent=6))),
    )

    wait_until(lambda: TelemetrySample.objects.filter(device=device).exists(), timeout=10, message="telemetry")
    refreshed = Device.objects.get(pk=device.pk)
    assert refreshed.online and refreshed.agent_version == "9.9"
    assert ingest.counts["invalid"] == 2
    assert ingest.counts["status"] == 1


def test_several_ingest_workers_split_a_shared_subscription(ingest, publisher, site, settings):
    second = MqttIngest("test-ingest-2", share_group="ingest", batch_size=50, flush_s=0.05)
    thread = threading.Thread(target=second.run, daemon=True)
    thread.start()
    assert second.wait_subscribed(10)
    device = make_device(site)
    for i in range(40):
        body = fp.TelemetryBody(cpu_percent=i, memory_percent=1)
        publisher.publish(fp.topic(device.pk, fp.Channel.TELEMETRY), fp.encode(fp.envelope(body)), qos=1)

    wait_until(lambda: TelemetrySample.objects.filter(device=device).count() == 40, timeout=10, message="40 samples")
    second.stop()
    thread.join(10)
    # Each message was stored once, by one of the two workers, and both took part.
    assert ingest.counts["telemetry"] + second.counts["telemetry"] == 40
    assert ingest.counts["telemetry"] > 0 and second.counts["telemetry"] > 0
