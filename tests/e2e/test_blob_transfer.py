"""A 5 MB blob over real MQTT, with the broker restarted in the middle: the download resumes, it does not start over.

A private Mosquitto, a real `manage.py blob_server` process on the test database and a blob store of its own,
and the agent's BlobDownloader on the agent's own AgentConnection.
"""

import hashlib
import os
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

import fleet_protocol as fp
from edge_agent.connection import AgentConnection
from edge_agent.download import BlobDownloader
from edge_agent.identity import DeviceIdentity
from fleet_server.devices.models import Command
from model_store.storage import FileSystemBlobStore
from tests.conftest import manage
from tests.fleet_server.conftest import make_device
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration]

BLOB_BYTES = 5 * 1024 * 1024
CHUNK = 64 * 1024
WINDOW = 16


def identity_for(device_id: str, mqtt_url: str) -> DeviceIdentity:
    return DeviceIdentity(
        device_id=device_id, name="box-1", kind="smart_box_cpu", site="north", server_url="http://127.0.0.1:1",
        mqtt_url=mqtt_url, mqtt_username="device", mqtt_password="pw", mqtt_client_id=f"agent-{device_id}",
        keepalive_s=5, telemetry_interval_s=10.0, enrolled_at=0.0,
    )  # fmt: skip


def test_download_survives_a_broker_restart_without_starting_over(mosquitto, processes, platform_env, park, tmp_path):
    data = os.urandom(BLOB_BYTES)
    store_root = tmp_path / "blobs"
    sha = FileSystemBlobStore(store_root).put_bytes(data)
    box = make_device(park)
    args = {"model": "lot-detector", "version": 1, "blob_sha256": sha, "blob_size": len(data), "chunk_size": CHUNK}
    command = Command.objects.create(
        device=box, name="deploy", args=args, expires_at=timezone.now() + timedelta(hours=1)
    )

    env = {**platform_env, "MQTT_URL": mosquitto.url, "BLOB_STORE_ROOT": str(store_root)}
    env["BLOB_WINDOW_PER_DEVICE"] = str(WINDOW)
    processes.start("blob_server", manage("blob_server", "--client-id", f"blobs-{box.pk[:8]}"), env)
    wait_until(lambda: "subscribed to" in processes.log("blob_server"), 30, message="the blob server to subscribe")

    connection: AgentConnection | None = None

    def send_request(body: fp.BlobRequestBody) -> None:
        connection.publish(fp.Channel.BLOB_REQ, fp.envelope(body))

    downloader = BlobDownloader(tmp_path / "downloads", send_request, window=WINDOW, request_timeout_s=2.0)
    connection = AgentConnection(
        identity_for(box.pk, mosquitto.url), status=lambda state: fp.StatusBody(state=state),
        on_command=lambda payload: None, keepalive_s=5, reconnect_max_s=2.0,
        on_blob=downloader.on_chunk, on_connected=downloader.resend_outstanding,
    )  # fmt: skip
    connection_thread = threading.Thread(target=connection.run, daemon=True)
    connection_thread.start()
    assert connection.wait_connected(10)

    deploy = fp.DeployCommand(
        command_id=str(command.pk), model="lot-detector", version=1, blob_sha256=sha, blob_size=len(data),
        chunk_size=CHUNK, wrapped_key="a2V5",
    )  # fmt: skip
    count = fp.chunk_count(len(data), CHUNK)
    reached, resume = threading.Event(), threading.Event()
    had_at_restart = []

    def progress(have: int, total: int) -> None:
        # Hold the download loop at 40 % while the broker goes away (chunks in flight still land).
        if have >= 0.4 * total and not reached.is_set():
            had_at_restart.append(have)
            reached.set()
            resume.wait(60)

    result: dict = {}

    def download() -> None:
        try:
            result["path"] = downloader.download(deploy, progress=progress, timeout_s=120)
        except Exception as exc:  # reported by the main thread
            result["error"] = exc

    download_thread = threading.Thread(target=download, daemon=True)
    download_thread.start()
    try:
        assert reached.wait(60), "the download never reached 40 %"
        mosquitto.stop()
        wait_until(lambda: not connection.connected, 15, message="the agent to notice the broker is gone")
        on_disk_while_down = downloader.chunks_received
        mosquitto.start()  # same port, a fresh broker: no sessions, nothing in flight
        resume.set()
        download_thread.join(120)
    finally:
        resume.set()
        connection.stop()
        connection_thread.join(10)

    assert "error" not in result, result.get("error")
    path = result["path"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    stats = downloader.stats()
    delivered = stats["chunks_received"] + sum(stats["refused"].values())
    print(
        f"\nblob transfer: {count} chunks of {CHUNK} bytes; {had_at_restart[0]} on disk at 40 %, "
        f"{on_disk_while_down} when the broker was down; {delivered} chunks delivered in total, "
        f"{delivered - count} re-sent; {stats['chunks_rerequested']} re-requested; stats {stats}"
    )
    assert stats["chunks_received"] == count
    assert connection.connect_count >= 2
    assert delivered <= count + 2 * WINDOW  # it resumed: nothing like a second full transfer
    assert on_disk_while_down < count  # the restart really happened mid-transfer
