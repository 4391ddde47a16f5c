"""The blob server against a private Mosquitto and the test database: what it serves and what it refuses."""

import hashlib
import os
import threading
import uuid
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest
from django.utils import timezone

import fleet_protocol as fp
from fleet_server.devices.models import Command, CommandState
from fleet_server.mqtt_bridge.blob_server import BlobServer
from fleet_server.registry.storage import blob_store
from tests.fleet_server.conftest import make_device
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHUNK = 1024


@pytest.fixture
def blob(settings, tmp_path):
    settings.BLOB_STORE_ROOT = tmp_path / "blobs"
    data = os.urandom(3 * CHUNK + 10)  # 4 chunks
    return data, blob_store().put_bytes(data)


def deploy(device, sha: str, size: int, **fields) -> Command:
    args = {"model": "lot-detector", "version": 1, "blob_sha256": sha, "blob_size": size, "chunk_size": CHUNK}
    return Command.objects.create(
        device=device, name=fields.pop("name", "deploy"), args=args, expires_at=timezone.now() + timedelta(hours=1),
        **fields,
    )  # fmt: skip


def run_server(mosquitto, settings, **kwargs):
    settings.MQTT_URL = mosquitto.url
    server = BlobServer(f"test-blobs-{uuid.uuid4().hex[:6]}", share_group="blobs", **kwargs)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.wait_subscribed(10)
    return server, thread


@pytest.fixture
def server(mosquitto, settings, blob):
    server, thread = run_server(mosquitto, settings, window_per_device=4, max_inflight=256)
    yield server
    server.stop()
    thread.join(10)


class Device:
    """A plain paho client in the devices' place: sends requests, collects every chunk on fleet/v1/+/blob."""

    def __init__(self, port: int):
        self.chunks: list[tuple[str, fp.Chunk]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe(fp.subscription(fp.Channel.BLOB), qos=1)
        assert subscribed.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        device_id, _ = fp.parse_topic(msg.topic)
        self.chunks.append((device_id, fp.decode_chunk(msg.payload)))

    def request(self, device_id: str, command_id, sha: str, chunks: list[int]) -> None:
        body = fp.BlobRequestBody(command_id=str(command_id), blob_sha256=sha, chunks=chunks)
        self.raw(device_id, fp.encode(fp.envelope(body)))

    def raw(self, device_id: str, payload: bytes) -> None:
        self.client.publish(fp.topic(device_id, fp.Channel.BLOB_REQ), payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices(mosquitto):
    device = Device(mosquitto.port)
    yield device
    device.close()


def test_serves_the_chunks_asked_for(server, devices, blob, site):
    data, sha = blob
    box = make_device(site)
    command = deploy(box, sha, len(data))
    devices.request(box.pk, command.pk, sha, [3, 0])
    wait_until(lambda: len(devices.chunks) == 2, 10, message="two chunks")
    got = {chunk.index: chunk for _, chunk in devices.chunks}
    assert {device_id for device_id, _ in devices.chunks} == {box.pk}
    assert got[0].data == data[:CHUNK] and got[3].data == data[3 * CHUNK :]
    assert got[0].count == 4 and got[0].blob_sha256 == sha
    wait_until(lambda: server.counts["acked"] == 2, 10, message="PUBACKs")


def test_refusals_send_nothing(server, devices, blob, site):
    data, sha = blob
    box, other, revoked = make_device(site), make_device(site, "box-2"), make_device(site, "box-3")
    command = deploy(box, sha, len(data))
    revoked.revoked_at = timezone.now()
    revoked.save()
    cases = [
        ("invalid", lambda: devices.raw(box.pk, b"{not json")),
        ("invalid", lambda: devices.raw(box.pk, fp.encode(fp.envelope(fp.StatusBody(state="online"))))),
        ("unknown_command", lambda: devices.request(box.pk, uuid.uuid4(), sha, [0])),
        ("unknown_command", lambda: devices.request(box.pk, "not-a-uuid", sha, [0])),
        ("wrong_device", lambda: devices.request(other.pk, command.pk, sha, [0])),
        ("wrong_blob", lambda: devices.request(box.pk, command.pk, hashlib.sha256(b"x").hexdigest(), [0])),
        ("wrong_blob", lambda: devices.request(box.pk, deploy(box, sha, len(data), name="rollback").pk, sha, [0])),
        ("final_command", lambda: devices.request(box.pk, deploy(box, sha, 1, state=CommandState.DONE).pk, sha, [0])),
        ("revoked_device", lambda: devices.request(revoked.pk, deploy(revoked, sha, len(data)).pk, sha, [0])),
        ("index_out_of_range", lambda: devices.request(box.pk, command.pk, sha, [4, 2**31])),
    ]
    expected: dict[str, int] = {}
    for reason, send in cases:
        send()
        key = f"refused_{reason}"
        expected[key] = expected.get(key, 0) + (2 if reason == "index_out_of_range" else 1)
        wait_until(lambda key=key: server.counts[key] == expected[key], 10, message=reason)
    assert server.counts["served"] == 0

    devices.request(box.pk, command.pk, sha, [1])  # a valid request after all of them
    wait_until(lambda: devices.chunks, 10, message="the valid chunk")
    assert [(device_id, chunk.index) for device_id, chunk in devices.chunks] == [(box.pk, 1)]
    assert server.counts["served"] == 1


def test_a_device_gets_its_chunks_one_window_at_a_time_and_requests_are_bounded(server, devices, blob, site):
    data = os.urandom(12 * CHUNK)
    sha = blob_store().put_bytes(data)
    box = make_device(site)
    command = deploy(box, sha, len(data))
    # A device asking for more than the server's window (4 here) gets them all, never more than 4 unacknowledged.
    devices.request(box.pk, command.pk, sha, list(range(12)))
    wait_until(lambda: len(devices.chunks) == 12, 10, message="all the chunks, a window at a time")
    assert sorted(chunk.index for _, chunk in devices.chunks) == list(range(12))
    assert server.max_inflight_seen <= 4
    assert server.counts["ignored_window"] == 0


def test_the_global_limit_holds_and_every_device_is_served(mosquitto, settings, blob, devices, site):
    data, sha = blob
    boxes = [make_device(site, f"box-{n}") for n in range(3)]
    server, thread = run_server(mosquitto, settings, window_per_device=4, max_inflight=2)
    try:
        for box in boxes:
            devices.request(box.pk, deploy(box, sha, len(data)).pk, sha, [0, 1, 2, 3])
        wait_until(lambda: len(devices.chunks) == 12, 15, message="every chunk of every device")
    finally:
        server.stop()
        thread.join(10)
    assert 1 <= server.max_inflight_seen <= 2
    for box in boxes:
        assert sorted(chunk.index for device_id, chunk in devices.chunks if device_id == box.pk) == [0, 1, 2, 3]


def test_queued_chunks_go_out_round_robin(settings, blob, site):
    data, sha = blob
    a, b = make_device(site, "box-a"), make_device(site, "box-b")
    server = BlobServer("test-blobs-unit", window_per_device=4, max_inflight=100)
    published = []

    def record(device_id, blob_info, index):  # not connected: record the order instead of publishing
        published.append((device_id, index))
        server._release(device_id)

    server._publish = record
    for box in (a, b):
        body = fp.BlobRequestBody(command_id=str(deploy(box, sha, len(data)).pk), blob_sha256=sha, chunks=[0, 1, 2])
        server.handle(fp.topic(box.pk, fp.Channel.BLOB_REQ), fp.encode(fp.envelope(body)))
    server.pump()
    assert published == [(a.pk, 0), (b.pk, 0), (a.pk, 1), (b.pk, 1), (a.pk, 2), (b.pk, 2)]


def test_a_device_may_queue_at_most_one_request_window_of_chunks(settings, site):
    data = os.urandom((2 * fp.MAX_WINDOW) * 1024)
    sha = blob_store().put_bytes(data)
    box = make_device(site)
    command = Command.objects.create(
        device=box, name="deploy", expires_at=timezone.now() + timedelta(hours=1),
        args={"blob_sha256": sha, "blob_size": len(data), "chunk_size": 1024},
    )  # fmt: skip
    server = BlobServer("test-blobs-unit", window_per_device=4, max_inflight=100)  # never connected: no pump
    for first in (0, fp.MAX_WINDOW):
        chunks = list(range(first, first + fp.MAX_WINDOW))
        body = fp.BlobRequestBody(command_id=str(command.pk), blob_sha256=sha, chunks=chunks)
        server.handle(fp.topic(box.pk, fp.Channel.BLOB_REQ), fp.encode(fp.envelope(body)))
    assert [index for _, index in server._devices[box.pk].pending] == list(range(fp.MAX_WINDOW))
    assert server.counts["ignored_window"] == fp.MAX_WINDOW
