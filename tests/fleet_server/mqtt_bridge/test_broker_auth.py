"""Per-device broker identities, enforced by a real Mosquitto with the exported password file and ACL."""

import threading

import paho.mqtt.client as mqtt
import pytest
from django.core.management import call_command
from django.utils import timezone

import fleet_protocol as fp
from fleet_server.devices.services import EnrollmentRequest, create_claim_token, enroll_device
from tests.fleet_server.conftest import new_public_key
from tests.helpers import Mosquitto, wait_until

pytestmark = pytest.mark.integration


def _enroll(site, name):
    _, token = create_claim_token(site)
    request = EnrollmentRequest(token=token, name=name, kind="smart_box_cpu", public_key=new_public_key())
    enrollment = enroll_device(request)
    return enrollment.device, enrollment.mqtt_password


class Client:
    def __init__(self, port, username, password):
        self.received: list[tuple[str, bytes]] = []
        self.granted: list[int] = []
        self.connect_result = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._connected.wait(5)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_result = reason_code
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.granted = [code.value for code in reason_codes]
        self._subscribed.set()

    def subscribe(self, topic):
        self._subscribed.clear()
        self.client.subscribe(topic, qos=1)
        assert self._subscribed.wait(5)
        return self.granted

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def secured_broker(tmp_path, settings, site):
    settings.MQTT_URL = "mqtt://platform:platform-secret@127.0.0.1:1"
    broker = Mosquitto(tmp_path / "secure")
    passwords, acl = tmp_path / "passwords", tmp_path / "acl"
    broker.extra_config = f"password_file {passwords}\nacl_file {acl}\n"
    broker.allow_anonymous = False

    def export():
        call_command("mqtt_auth_export", "--password-file", str(passwords), "--acl-file", str(acl))

    return broker, export


def test_each_device_is_confined_to_its_own_topics(secured_broker, site):
    alice, alice_password = _enroll(site, "alice")
    bob, _ = _enroll(site, "bob")
    broker, export = secured_broker
    export()
    broker.start()
    platform = Client(broker.port, "platform", "platform-secret")
    assert platform.subscribe(fp.subscription(fp.Channel.STATUS)) == [1]
    device = Client(broker.port, alice.mqtt_username, alice_password)
    assert device.connect_result == 0

    # A device reads its own commands, never another device's (Mosquitto acknowledges the
    # subscription under MQTT 3.1.1 but delivers nothing through it).
    device.subscribe(fp.topic(alice.pk, fp.Channel.CMD))
    device.subscribe(fp.topic(bob.pk, fp.Channel.CMD))
    platform.client.publish(fp.topic(bob.pk, fp.Channel.CMD), b"for bob", qos=1).wait_for_publish(5)
    platform.client.publish(fp.topic(alice.pk, fp.Channel.CMD), b"for alice", qos=1).wait_for_publish(5)
    wait_until(lambda: device.received, timeout=5, message="alice's command")
    # It speaks for itself; its attempt to speak for bob is dropped by the broker.
    device.client.publish(fp.topic(bob.pk, fp.Channel.STATUS), b"spoofed", qos=1).wait_for_publish(5)
    device.client.publish(fp.topic(alice.pk, fp.Channel.STATUS), b"genuine", qos=1).wait_for_publish(5)
    wait_until(lambda: platform.received, timeout=5, message="alice's status")
    assert device.received == [(fp.topic(alice.pk, fp.Channel.CMD), b"for alice")]
    assert platform.received == [(fp.topic(alice.pk, fp.Channel.STATUS), b"genuine")]
    device.close()
    platform.close()


def test_wrong_passwords_and_revoked_devices_are_refused(secured_broker, site):
    alice, alice_password = _enroll(site, "alice")
    broker, export = secured_broker
    alice.revoked_at = timezone.now()
    alice.save()
    export()
    broker.start()
    assert Client(broker.port, alice.mqtt_username, alice_password).connect_result != 0
    assert Client(broker.port, "platform", "wrong").connect_result != 0
    assert Client(broker.port, "platform", "platform-secret").connect_result == 0
