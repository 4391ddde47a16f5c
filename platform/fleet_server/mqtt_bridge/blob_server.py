"""The blob server: answers devices' chunk requests (``blob/req``) with binary chunks (``blob``).

A request names a deploy command and the chunks the device still lacks. The server checks that
the command is this device's, a ``deploy`` of that very blob, not final, and that the device is
not revoked; then it reads the chunks from the registry's blob store and publishes them with
QoS 1 to the device's ``blob`` topic. Anything else is counted, logged and dropped.

Two limits keep one device or a whole fleet from swamping the broker: at most
``BLOB_WINDOW_PER_DEVICE`` chunks in flight per device, and at most ``BLOB_MAX_INFLIGHT`` chunks
published and not yet acknowledged by the broker (PUBACK) across all devices. What a device asked
for beyond them waits in its queue (at most ``fp.MAX_WINDOW`` indices: a device that asks for more
than that at once has the rest ignored and asks again); the queues are served round-robin, so a
device with a large blob does not starve the others, and a device whose window is wider than the
server's gets its chunks one window at a time instead of waiting to ask again.

paho's network thread only queues requests and counts PUBACKs; the main thread does the database
and disk work and publishes.
"""

import logging
import queue
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from django.conf import settings
from django.db import close_old_connections, connection

import fleet_protocol as fp
from fleet_server.devices.models import Command
from fleet_server.mqtt_bridge.connection import new_client, platform_broker
from fleet_server.registry.storage import blob_store
from model_store.storage import BlobNotFound

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Request:
    topic: str
    payload: bytes


@dataclass(frozen=True)
class _Blob:
    sha: str
    size: int
    chunk_size: int
    count: int


@dataclass
class _DeviceQueue:
    pending: deque = field(default_factory=deque)  # (blob, index)
    inflight: int = 0


class BlobServer:
    def __init__(
        self,
        client_id: str,
        *,
        share_group: str | None = None,
        window_per_device: int = 16,
        max_inflight: int = 256,
        report_s: float = 60.0,
        inflight_timeout_s: float = 30.0,
    ):
        self.client_id = client_id
        self.share_group = share_group or None
        self.window_per_device = max(1, window_per_device)
        self.max_inflight = max(1, max_inflight)
        self.report_s = report_s
        self.inflight_timeout_s = inflight_timeout_s
        self.counts: Counter = Counter()
        self.max_inflight_seen = 0
        self._inbox: queue.Queue[_Request] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._lock = threading.Lock()  # guards the in-flight accounting below
        self._devices: dict[str, _DeviceQueue] = {}
        self._rotation: OrderedDict[str, None] = OrderedDict()  # devices with pending chunks, in turn
        # Published, not yet PUBACKed: (device id, paho's MQTTMessageInfo, published at).
        self._inflight: list[tuple[str, mqtt.MQTTMessageInfo, float]] = []
        self._store = blob_store()
        self._client = new_client(client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        # paho's own cap on unacknowledged messages would queue silently; ours is the one that counts.
        self._client.max_inflight_messages_set(self.max_inflight)
        self._client.max_queued_messages_set(0)

    # --- paho callbacks (network thread) ---

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            logger.error("blob server: broker refused the connection: %s", reason_code)
            return
        subscription = fp.subscription(fp.Channel.BLOB_REQ, self.share_group)
        client.subscribe(subscription, qos=1)
        logger.info("blob server: connected as %s, subscribed to %s", self.client_id, subscription)
        self._subscribed.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._subscribed.clear()
        if not self._stop.is_set():
            logger.warning("blob server: disconnected from the broker (%s); paho reconnects", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        try:
            self._inbox.put_nowait(_Request(msg.topic, msg.payload))
        except queue.Full:
            self.counts["refused_overloaded"] += 1  # the device asks again

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        # paho marks the message's MQTTMessageInfo published right after this; pump() settles it.
        self.counts["acked"] += 1

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
                busy = bool(self._rotation)
                try:
                    request = self._inbox.get(timeout=0.01 if busy else 0.25)
                except queue.Empty:
                    request = None
                self._settle_inflight()  # before handling: a request's room depends on it
                if request is not None:
                    close_old_connections()
                    self.handle(request.topic, request.payload)
                    while True:  # whatever else has arrived, before publishing
                        try:
                            request = self._inbox.get_nowait()
                        except queue.Empty:
                            break
                        self.handle(request.topic, request.payload)
                self.pump()
                if time.monotonic() - last_report > self.report_s:
                    logger.info("blob server: %s", dict(self.counts))
                    last_report = time.monotonic()
        finally:
            self._client.disconnect()
            self._client.loop_stop()
            connection.close()

    def _device(self, device_id: str) -> _DeviceQueue:
        device = self._devices.get(device_id)
        if device is None:
            device = self._devices[device_id] = _DeviceQueue()
        return device

    def _refuse(self, reason: str, detail: str, count: int = 1) -> None:
        self.counts[f"refused_{reason}"] += count
        logger.warning("blob server: refused (%s): %s", reason, detail)

    def handle(self, topic: str, payload: bytes) -> None:
        """Check one request and queue the chunks it may have (up to the device's window)."""
        try:
            device_id, channel = fp.parse_topic(topic)
            if channel != fp.Channel.BLOB_REQ:
                raise fp.ProtocolError(f"not a blob request topic: {topic[:200]}")
            body = fp.decode_for_channel(fp.Channel.BLOB_REQ, payload).body
        except fp.ProtocolError as exc:
            return self._refuse("invalid", exc.reason)
        blob = self._authorize(device_id, body)
        if blob is None:
            return None
        indices = list(dict.fromkeys(body.chunks))  # in order, without repeats
        bad = [index for index in indices if index >= blob.count]
        if bad:
            self._refuse("index_out_of_range", f"{device_id}: chunks {bad[:5]} of {blob.count}", len(bad))
            indices = [index for index in indices if index < blob.count]
        with self._lock:
            device = self._device(device_id)
            queued = {(b.sha, i) for b, i in device.pending}
            indices = [index for index in indices if (blob.sha, index) not in queued]
            room = max(0, fp.MAX_WINDOW - len(device.pending))
            if len(indices) > room:
                self.counts["ignored_window"] += len(indices) - room
                logger.info("blob server: %s asked for %d chunks, room for %d", device_id, len(indices), room)
                indices = indices[:room]
            device.pending.extend((blob, index) for index in indices)
            if device.pending:
                self._rotation[device_id] = None
        self.counts["requests"] += 1
        return None

    def _authorize(self, device_id: str, body: fp.BlobRequestBody) -> _Blob | None:
        try:
            command_id = uuid.UUID(body.command_id)
        except ValueError:
            self._refuse("unknown_command", f"{device_id}: command id {body.command_id!r} is not ours")
            return None
        command = Command.objects.select_related("device").filter(pk=command_id).first()
        if command is None:
            self._refuse("unknown_command", f"{device_id}: no command {command_id}")
            return None
        if command.device_id != device_id:
            self._refuse("wrong_device", f"{device_id} asked for command {command_id} of another device")
            return None
        if command.device.revoked_at is not None:
            self._refuse("revoked_device", f"{device_id} is revoked")
            return None
        if command.name != "deploy" or command.args.get("blob_sha256") != body.blob_sha256:
            self._refuse("wrong_blob", f"{device_id}: command {command_id} does not deploy {body.blob_sha256[:12]}")
            return None
        if command.is_final:
            self._refuse("final_command", f"{device_id}: command {command_id} is {command.state}")
            return None
        chunk_size = command.args.get("chunk_size")
        if not isinstance(chunk_size, int) or not 1 <= chunk_size <= fp.MAX_CHUNK_BYTES:
            self._refuse("bad_command", f"command {command_id} has chunk size {chunk_size!r}")
            return None
        try:
            size = self._store.size(body.blob_sha256)
        except (BlobNotFound, FileNotFoundError, ValueError):
            self._refuse("blob_missing", f"blob {body.blob_sha256} is not in the store")
            return None
        if size <= 0 or command.args.get("blob_size", size) != size:
            self._refuse("bad_command", f"command {command_id}: blob size {command.args.get('blob_size')} != {size}")
            return None
        return _Blob(body.blob_sha256, size, chunk_size, fp.chunk_count(size, chunk_size))

    def pump(self) -> None:
        """Publish queued chunks, round-robin across devices, while the global and per-device limits allow."""
        self._settle_inflight()
        while True:
            with self._lock:
                if len(self._inflight) >= self.max_inflight:
                    return
                device_id = next(
                    (d for d in self._rotation if self._devices[d].inflight < self.window_per_device), None
                )
                if device_id is None:
                    return
                device = self._devices[device_id]
                blob, index = device.pending.popleft()
                del self._rotation[device_id]
                if device.pending:
                    self._rotation[device_id] = None  # to the back of the line
                device.inflight += 1  # held until PUBACK (or until publishing fails)
            self._publish(device_id, blob, index)

    def _publish(self, device_id: str, blob: _Blob, index: int) -> None:
        try:
            with self._store.open(blob.sha) as file:
                file.seek(index * blob.chunk_size)
                data = file.read(blob.chunk_size)
        except (BlobNotFound, OSError) as exc:
            self._release(device_id)
            return self._refuse("blob_missing", f"blob {blob.sha}: {exc}")
        payload = fp.encode_chunk(fp.Chunk(blob.sha, index, blob.count, data))
        # Not under our lock: paho calls on_publish holding its own message lock.
        info = self._client.publish(fp.topic(device_id, fp.Channel.BLOB), payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self._release(device_id)
            self.counts["publish_failed"] += 1
            return None
        with self._lock:
            self._inflight.append((device_id, info, time.monotonic()))
            self.max_inflight_seen = max(self.max_inflight_seen, len(self._inflight))
        self.counts["served"] += 1
        return None

    def _release(self, device_id: str) -> None:
        with self._lock:
            self._device(device_id).inflight -= 1

    def _settle_inflight(self) -> None:
        """Release the chunks the broker has acknowledged, and those whose PUBACK never came.

        paho resends unacknowledged chunks itself after a reconnect, so they settle then; a chunk whose
        PUBACK has not come after ``inflight_timeout_s`` (a broker that stays away) is forgotten.
        """
        cutoff = time.monotonic() - self.inflight_timeout_s
        with self._lock:
            still = []
            for device_id, info, published_at in self._inflight:
                if info.is_published() or published_at < cutoff:
                    self._device(device_id).inflight -= 1
                    if not info.is_published():
                        self.counts["inflight_expired"] += 1
                else:
                    still.append((device_id, info, published_at))
            self._inflight = still
            for device_id in [d for d, q in self._devices.items() if not q.inflight and not q.pending]:
                del self._devices[device_id]


def default_client_id() -> str:
    import socket

    return f"fleet-blobs-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"[:64]


def build_blob_server(client_id: str | None = None) -> BlobServer:
    return BlobServer(
        client_id or default_client_id(),
        share_group=settings.MQTT_SHARED_GROUP,
        window_per_device=settings.BLOB_WINDOW_PER_DEVICE,
        max_inflight=settings.BLOB_MAX_INFLIGHT,
    )
