"""Paho clients for the platform: one factory, and a blocking publisher that waits for the broker's PUBACK."""

import threading
import uuid

import paho.mqtt.client as mqtt
from django.conf import settings

from fleet_protocol.broker import BrokerAddress


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached or did not confirm a publish in time."""


def platform_broker() -> BrokerAddress:
    return BrokerAddress.from_url(settings.MQTT_URL)


def new_client(client_id: str, *, clean_session: bool = True, manual_ack: bool = False) -> mqtt.Client:
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    platform_broker().configure(client)
    return client


class BlockingPublisher:
    """Connect, publish with QoS 1 waiting for each PUBACK, disconnect. For the outbox worker."""

    def __init__(self, timeout_s: float = 5.0):
        self.timeout_s = timeout_s
        self._connected = threading.Event()
        self._client = new_client(f"fleet-outbox-{uuid.uuid4().hex[:12]}")
        self._client.on_connect = self._on_connect

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            self._connected.set()

    def __enter__(self) -> "BlockingPublisher":
        address = platform_broker()
        self._client.connect_timeout = self.timeout_s
        try:
            self._client.connect(address.host, address.port, keepalive=30)
        except OSError as exc:
            raise BrokerUnavailable(f"cannot reach the MQTT broker at {address.url()}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(self.timeout_s):
            self._client.loop_stop()
            raise BrokerUnavailable(f"the MQTT broker at {address.url()} refused or did not answer the connection")
        return self

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerUnavailable(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        info.wait_for_publish(self.timeout_s)
        if not info.is_published():
            raise BrokerUnavailable(f"the broker did not confirm the message to {topic} in {self.timeout_s:.0f} s")

    def __exit__(self, *exc_info) -> None:
        self._client.disconnect()
        self._client.loop_stop()
