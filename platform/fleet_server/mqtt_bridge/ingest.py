"""The MQTT ingest: device messages in, validated, applied to the database in batches.

paho's network thread only queues messages; the main thread decodes them, applies a batch in
one transaction and only then acknowledges the QoS 1 ones (paho's manual ack), so a crash
between receipt and commit loses nothing: the broker redelivers to the persistent session.
"""

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import close_old_connections, transaction

import fleet_protocol as fp
from fleet_server.devices.services import DeviceMessage, ingest_device_messages
from fleet_server.events.services import ingest_events
from fleet_server.mqtt_bridge.connection import new_client, platform_broker

logger = logging.getLogger(__name__)

INGESTED_CHANNELS = (fp.Channel.STATUS, fp.Channel.TELEMETRY, fp.Channel.CMD_ACK, fp.Channel.EVENTS)


@dataclass(frozen=True)
class _Received:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: datetime


class MqttIngest:
    def __init__(self, client_id: str, *, share_group: str | None = None, batch_size: int = 500, flush_s: float = 0.25):
        self.client_id = client_id
        self.share_group = share_group or None
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.counts: Counter = Counter()
        # Bounded: when the database falls behind, paho's thread blocks and TCP pushes back on the broker.
        self._inbox: queue.Queue[_Received] = queue.Queue(maxsize=batch_size * 20)
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        # Acks for messages of an earlier connection must not be sent on a new one (ids are reused);
        # the broker redelivers those itself.
        self._generation = 0
        self._client = new_client(client_id, clean_session=False, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        # A handful of ingest workers, not a fleet: retry soon so presence and acks resume quickly.
        self._client.reconnect_delay_set(min_delay=1, max_delay=10)

    # --- paho callbacks (network thread) ---

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.error("ingest: broker refused the connection: %s", reason_code)
            return
        self._generation += 1
        topics = [(fp.subscription(channel, self.share_group), 1) for channel in INGESTED_CHANNELS]
        client.subscribe(topics)
        logger.info("ingest: connected as %s, subscribed to %s", self.client_id, ", ".join(t for t, _ in topics))
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._subscribed.clear()
        if not self._stop.is_set():
            logger.warning("ingest: disconnected from the broker (%s); paho reconnects", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        item = _Received(msg.topic, msg.payload, msg.mid, msg.qos, self._generation, datetime.now(tz=UTC))
        while not self._stop.is_set():
            try:
                self._inbox.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    # --- main thread ---

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        address = platform_broker()
        self._client.connect_async(address.host, address.port, keepalive=30)
        self._client.loop_start()
        last_report = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = self._take_batch()
                if batch:
                    self._apply(batch)
                if time.monotonic() - last_report > 60:
                    logger.info("ingest: %s", dict(self.counts))
                    last_report = time.monotonic()
            # Drain what already arrived before leaving, so a clean stop loses nothing.
            while batch := self._take_batch(wait=False):
                self._apply(batch)
        finally:
            self._client.disconnect()
            self._client.loop_stop()

    def _take_batch(self, wait: bool = True) -> list[_Received]:
        """What has arrived, up to ``batch_size``; only the first message is waited for (``flush_s``).

        Never waiting for a batch to fill matters: QoS 1 messages are acknowledged after the commit,
        and a broker sends only a few unacknowledged ones at a time (Mosquitto: 20), so waiting for
        more would cap QoS 1 throughput at that window per flush period. Under load, batches grow by
        themselves with what arrives during the previous commit.
        """
        try:
            batch = [self._inbox.get(timeout=self.flush_s) if wait else self._inbox.get_nowait()]
        except queue.Empty:
            return []
        while len(batch) < self.batch_size:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        return batch

    def _apply(self, batch: list[_Received]) -> None:
        decoded: list[DeviceMessage] = []
        for item in batch:
            try:
                device_id, channel = fp.parse_topic(item.topic)
                message = fp.decode_for_channel(channel, item.payload)
            except fp.ProtocolError as exc:
                self.counts["invalid"] += 1
                logger.warning("ingest: dropped a message on %s: %s", item.topic[:200], exc.reason)
                continue
            decoded.append(DeviceMessage(device_id, message, item.received_at))
        close_old_connections()
        events = [m for m in decoded if isinstance(m.message, fp.EventMessage)]
        with transaction.atomic():
            self.counts.update(ingest_device_messages(decoded))  # presence from every message, events included
            self.counts.update(ingest_events(events))
        for item in batch:
            if item.qos > 0 and item.generation == self._generation:
                self._client.ack(item.mid, item.qos)


def default_client_id() -> str:
    import socket

    return f"fleet-ingest-{socket.gethostname()}"[:64]


def build_ingest(client_id: str | None = None) -> MqttIngest:
    return MqttIngest(
        client_id or default_client_id(),
        share_group=settings.MQTT_SHARED_GROUP,
        batch_size=settings.MQTT_INGEST_BATCH,
        flush_s=settings.MQTT_INGEST_FLUSH_S,
    )
