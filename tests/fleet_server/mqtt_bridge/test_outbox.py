"""The command outbox against a real Mosquitto: in order, nothing lost while the broker is down."""

import threading
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest
from django.db import transaction
from django.utils import timezone

from fleet_server.mqtt_bridge import outbox
from fleet_server.mqtt_bridge.models import OutboxMessage
from tests.helpers import wait_until

pytestmark = pytest.mark.integration


class Subscriber:
    def __init__(self, port: int, topic: str):
        self.received: list[bytes] = []
        self._ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = lambda c, u, m: self.received.append(m.payload)
        self.client.on_subscribe = lambda *args: self._ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        assert self._ready.wait(5)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker_settings(mosquitto, settings):
    settings.MQTT_URL = mosquitto.url
    settings.OUTBOX_RETRY_MAX_S = 0
    return mosquitto


def test_pending_messages_are_published_in_order(db, broker_settings, django_capture_on_commit_callbacks):
    subscriber = Subscriber(broker_settings.port, "fleet/v1/d1/cmd")
    for i in range(5):
        outbox.enqueue("fleet/v1/d1/cmd", f"m{i}".encode())

    report = outbox.publish_pending()

    assert len(report.published) == 5 and report.failed == 0
    wait_until(lambda: len(subscriber.received) == 5, timeout=5, message="5 messages")
    assert subscriber.received == [f"m{i}".encode() for i in range(5)]
    assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 0
    subscriber.close()


def test_a_message_saved_while_the_broker_is_down_is_published_when_it_returns(db, broker_settings):
    broker_settings.stop()
    outbox.enqueue("fleet/v1/d1/cmd", b"reboot-later")

    report = outbox.publish_pending()

    assert report.failed == 1 and "cannot reach the MQTT broker" in report.error
    pending = OutboxMessage.objects.get()
    assert pending.published_at is None and pending.attempts == 1 and pending.last_error

    broker_settings.start()
    subscriber = Subscriber(broker_settings.port, "fleet/v1/d1/cmd")
    assert len(outbox.publish_pending().published) == 1
    wait_until(lambda: subscriber.received == [b"reboot-later"], timeout=5, message="the delayed message")
    subscriber.close()


def test_retries_back_off_per_message(db, broker_settings, settings):
    settings.OUTBOX_RETRY_MAX_S = 300
    broker_settings.stop()
    outbox.enqueue("fleet/v1/d1/cmd", b"x")
    for _ in range(3):
        OutboxMessage.objects.update(next_attempt_at=timezone.now())
        outbox.publish_pending()
    message = OutboxMessage.objects.get()
    assert message.attempts == 3
    assert message.next_attempt_at - timezone.now() > timedelta(seconds=3)
    # Not due yet: the next run leaves it alone.
    assert outbox.publish_pending().failed == 0


def test_a_rolled_back_change_publishes_nothing(db, broker_settings):
    with pytest.raises(RuntimeError), transaction.atomic():
        outbox.enqueue("fleet/v1/d1/cmd", b"never")
        raise RuntimeError("the change failed")
    assert OutboxMessage.objects.count() == 0
