"""The agent's MQTT session: Last Will, retained online status, and its own reconnect loop.

paho's built-in reconnect is switched off: this loop decides when to retry (exponential back-off
with jitter), so ten thousand devices do not hammer a broker that just restarted.
"""

import logging
import ssl
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

import fleet_protocol as fp
from edge_agent.backoff import Backoff
from edge_agent.identity import DeviceIdentity
from fleet_protocol.broker import BrokerAddress

logger = logging.getLogger(__name__)

# A connection that stayed up this long resets the back-off; a flapping one keeps backing off.
_STABLE_CONNECTION_S = 30.0


class AgentConnection:
    def __init__(
        self,
        identity: DeviceIdentity,
        *,
        status: Callable[[str], fp.StatusBody],
        on_command: Callable[[bytes], None],
        keepalive_s: int,
        reconnect_max_s: float = 60.0,
        on_blob: Callable[[bytes], None] | None = None,
        on_connected: Callable[[], None] | None = None,
    ):
        self.identity = identity
        self.keepalive_s = keepalive_s
        self.address = BrokerAddress.from_url(identity.mqtt_url)
        self._status = status
        self._on_command = on_command
        # Chunks of a blob being downloaded (edge_agent.download), and a hook run after each (re)connect.
        self._on_blob = on_blob
        self._on_connected = on_connected
        self._backoff = Backoff(base_s=1.0, max_s=reconnect_max_s)
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._connected_at = 0.0
        self.connect_count = 0
        self.last_error = ""

        self.client = mqtt.Client(
            callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
            client_id=identity.mqtt_client_id,
            # A persistent session: commands published while the device is away wait at the broker.
            clean_session=False,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        self.client.username_pw_set(identity.mqtt_username, identity.mqtt_password)
        if self.address.tls:
            self.client.tls_set()
        self.client.will_set(
            self.topic(fp.Channel.STATUS), fp.encode(fp.envelope(status("offline"))), qos=1, retain=True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def topic(self, channel: fp.Channel) -> str:
        return fp.topic(self.identity.device_id, channel)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- paho callbacks (network thread) ---

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            logger.error("%s (check the device's MQTT credentials, or re-enroll)", self.last_error)
            return
        # Subscribe before announcing ourselves, so anything sent in reaction to 'online' reaches us.
        client.subscribe(self.topic(fp.Channel.CMD), qos=1)
        if self._on_blob is not None:
            client.subscribe(self.topic(fp.Channel.BLOB), qos=1)
        self.publish_status()
        self._connected_at = time.monotonic()
        self.connect_count += 1
        self.last_error = ""
        self._connected.set()
        logger.info("connected to %s as %s", self.address.url(), self.identity.device_id)
        if self._on_connected is not None:
            try:
                self._on_connected()
            except Exception:
                logger.exception("the on_connected hook failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if not self._stop.is_set():
            self.last_error = f"disconnected: {reason_code}"
            logger.warning("lost the broker connection (%s)", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic == self.topic(fp.Channel.CMD):
            self._on_command(msg.payload)
        elif self._on_blob is not None and msg.topic == self.topic(fp.Channel.BLOB):
            self._on_blob(msg.payload)

    # --- the connection thread ---

    def run(self) -> None:
        """Connect, serve until disconnected, back off, repeat; returns after ``stop()``."""
        while not self._stop.is_set():
            try:
                self.client.connect(self.address.host, self.address.port, keepalive=self.keepalive_s)
            except (OSError, ssl.SSLError) as exc:
                self.last_error = f"cannot reach the broker at {self.address.url()}: {exc}"
                self._sleep_before_retry()
                continue
            self.client.loop_forever()
            if self._connected_at and time.monotonic() - self._connected_at > _STABLE_CONNECTION_S:
                self._backoff.reset()
            self._connected_at = 0.0
            if not self._stop.is_set():
                self._sleep_before_retry()

    def _sleep_before_retry(self) -> None:
        delay = self._backoff.next_delay()
        logger.info("%s; retrying in %.1f s", self.last_error or "not connected", delay)
        self._stop.wait(delay)

    # --- any thread ---

    def publish(self, channel: fp.Channel, message: fp.Message, *, qos: int = 1, retain: bool = False):
        return self.client.publish(self.topic(channel), fp.encode(message), qos=qos, retain=retain)

    def publish_status(self) -> None:
        self.publish(fp.Channel.STATUS, fp.envelope(self._status("online")), qos=1, retain=True)

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def stop(self, timeout_s: float = 3.0) -> None:
        """Say 'offline' ourselves (a clean disconnect does not fire the Last Will), then disconnect."""
        self._stop.set()
        if self.connected:
            info = self.publish(fp.Channel.STATUS, fp.envelope(self._status("offline")), qos=1, retain=True)
            info.wait_for_publish(timeout_s)
        self.client.disconnect()
