"""BlobDownloader against an in-process transport that serves chunks from bytes (no broker)."""

import contextlib
import hashlib
import os
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fleet_protocol as fp
from edge_agent.download import BlobDownloader, DownloadError
from tests.helpers import wait_until

CHUNK = 1024


def make_command(data: bytes, chunk_size: int = CHUNK, sha: str | None = None) -> fp.DeployCommand:
    return fp.DeployCommand(
        command_id=uuid.uuid4().hex, model="lot-detector", version=1,
        blob_sha256=sha or hashlib.sha256(data).hexdigest(), blob_size=len(data), chunk_size=chunk_size,
        wrapped_key="a2V5",
    )  # fmt: skip


def chunk_payload(data: bytes, sha: str, index: int, chunk_size: int = CHUNK) -> bytes:
    count = fp.chunk_count(len(data), chunk_size)
    return fp.encode_chunk(fp.Chunk(sha, index, count, data[index * chunk_size : (index + 1) * chunk_size]))


class Transport:
    """Answers each request at once by feeding the chunks to the downloader, unless told to hold back."""

    def __init__(self, data: bytes, sha: str | None = None, serve=lambda index: True):
        self.data = data
        self.sha = sha or hashlib.sha256(data).hexdigest()
        self.serve = serve
        self.requests: list[fp.BlobRequestBody] = []
        self.downloader: BlobDownloader | None = None

    def __call__(self, body: fp.BlobRequestBody) -> None:
        # What a device sends must be a valid message on the wire.
        assert isinstance(fp.decode_for_channel(fp.Channel.BLOB_REQ, fp.encode(fp.envelope(body))).body, type(body))
        self.requests.append(body)
        for index in body.chunks:
            if self.serve(index):
                self.downloader.on_chunk(chunk_payload(self.data, self.sha, index))

    @property
    def requested(self) -> list[int]:
        return [index for body in self.requests for index in body.chunks]


def downloader_for(directory, transport: Transport, **kwargs) -> BlobDownloader:
    downloader = BlobDownloader(directory, transport, **kwargs)
    transport.downloader = downloader
    return downloader


def test_full_download_reports_progress_and_keeps_the_window(tmp_path):
    data = os.urandom(20 * CHUNK + 123)
    transport = Transport(data)
    downloader = downloader_for(tmp_path, transport, window=4)
    seen = []

    path = downloader.download(make_command(data), progress=lambda have, count: seen.append((have, count)))

    assert path == tmp_path / f"{hashlib.sha256(data).hexdigest()}.blob"
    assert path.read_bytes() == data
    assert sorted(transport.requested) == list(range(21))  # each chunk asked for once
    assert all(len(body.chunks) <= 4 for body in transport.requests)
    assert seen[0] == (0, 21) and seen[-1] == (21, 21)
    assert downloader.stats()["chunks_received"] == 21 and downloader.stats()["refused"] == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no .part / .have left


def test_a_new_downloader_resumes_from_the_chunks_on_disk(tmp_path):
    data = os.urandom(20 * CHUNK)
    command = make_command(data)
    stop = threading.Event()

    def first_half(index):
        if index >= 10:
            stop.set()  # the "process" dies before the second half arrives
            return False
        return True

    first = Transport(data, serve=first_half)
    with pytest.raises(DownloadError, match="stopped"):
        downloader_for(tmp_path, first, window=16).download(command, stop=stop)
    assert (tmp_path / f"{command.blob_sha256}.part").exists()

    second = Transport(data)
    path = downloader_for(tmp_path, second, window=16).download(command)

    assert path.read_bytes() == data
    assert sorted(second.requested) == list(range(10, 20))  # only the missing ones


def test_outstanding_chunks_are_asked_for_again_after_the_request_timeout(tmp_path):
    data = os.urandom(8 * CHUNK)
    lost = {3, 5}

    def lossy(index):
        if index in lost:
            lost.discard(index)  # lost once (a broker restart), served when asked again
            return False
        return True

    transport = Transport(data, serve=lossy)
    downloader = downloader_for(tmp_path, transport, window=8, request_timeout_s=0.2)
    assert downloader.download(make_command(data), timeout_s=30).read_bytes() == data
    assert sorted(transport.requested) == [0, 1, 2, 3, 3, 4, 5, 5, 6, 7]
    assert downloader.stats()["chunks_rerequested"] == 2


def test_resend_outstanding_asks_again_at_once(tmp_path):
    data = os.urandom(4 * CHUNK)
    transport = Transport(data, serve=lambda index: False)
    downloader = downloader_for(tmp_path, transport, window=4, request_timeout_s=3600)
    command = make_command(data)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("path", downloader.download(command, timeout_s=60)))
    thread.start()
    wait_until(lambda: transport.requested == [0, 1, 2, 3], timeout=10, message="first request")
    transport.serve = lambda index: True
    downloader.resend_outstanding()  # what the connection's on_connected hook does
    thread.join(30)
    assert result["path"].read_bytes() == data
    assert transport.requested == [0, 1, 2, 3, 0, 1, 2, 3]


def disk_state(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_bad_chunks_are_refused_and_leave_the_disk_unchanged(tmp_path):
    data = os.urandom(20 * CHUNK + 100)
    command = make_command(data)
    sha = command.blob_sha256
    transport = Transport(data, serve=lambda index: index == 0)
    downloader = downloader_for(tmp_path, transport, window=4, request_timeout_s=3600)
    stop = threading.Event()
    errors = []

    def run():
        try:
            downloader.download(command, stop=stop)
        except DownloadError as exc:
            errors.append(exc.reason)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: downloader.chunks_received == 1 and len(transport.requested) >= 4, 10, message="requests")
    before = disk_state(tmp_path)
    other = os.urandom(2 * CHUNK)

    bad = {
        "malformed": [b"", b"FBC1" + b"\0" * 80, chunk_payload(data, sha, 1)[:-1]],
        "unknown_blob": [chunk_payload(other, hashlib.sha256(other).hexdigest(), 1)],
        "out_of_window": [chunk_payload(data, sha, 10)],
        "wrong_count": [fp.encode_chunk(fp.Chunk(sha, 1, 22, data[CHUNK : 2 * CHUNK]))],
        "oversized": [fp.encode_chunk(fp.Chunk(sha, 1, 21, data[CHUNK : 3 * CHUNK]))],
        "wrong_size": [
            fp.encode_chunk(fp.Chunk(sha, 1, 21, data[CHUNK : 2 * CHUNK - 1])),
            fp.encode_chunk(fp.Chunk(sha, 20, 21, data[20 * CHUNK :] + b"x")),
        ],
        "duplicate": [chunk_payload(data, sha, 0)],
    }
    for payloads in bad.values():
        for payload in payloads:
            downloader.on_chunk(payload)

    assert disk_state(tmp_path) == before
    assert downloader.refused == {reason: len(payloads) for reason, payloads in bad.items()}
    assert downloader.chunks_received == 1
    stop.set()
    thread.join(10)
    assert errors == ["stopped"]


def test_a_final_hash_mismatch_raises_and_discards(tmp_path):
    data = os.urandom(6 * CHUNK)
    forged = os.urandom(6 * CHUNK)
    command = make_command(data)
    # Every chunk is well formed and claims the right blob, but the bytes are not the blob's.
    transport = Transport(forged, sha=command.blob_sha256)
    downloader = downloader_for(tmp_path, transport)
    with pytest.raises(DownloadError, match="sha256"):
        downloader.download(command)
    assert list(tmp_path.iterdir()) == []


def test_a_torn_have_record_is_ignored_on_resume(tmp_path):
    data = os.urandom(4 * CHUNK)
    command = make_command(data)
    stop = threading.Event()
    first = Transport(data, serve=lambda index: index == 0 or stop.set())
    with pytest.raises(DownloadError):
        downloader_for(tmp_path, first).download(command, stop=stop)
    with open(tmp_path / f"{command.blob_sha256}.have", "ab") as have:
        have.write(b"\0\0")  # a SIGKILL in the middle of marking chunk 2 present
    second = Transport(data)
    assert downloader_for(tmp_path, second).download(command).read_bytes() == data
    assert sorted(second.requested) == [1, 2, 3]


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    """A downloader in the middle of a download, so that fuzzed chunks get past the 'unknown blob' check."""
    data = os.urandom(8 * CHUNK)
    command = make_command(data)
    transport = Transport(data, serve=lambda index: False)
    downloader = downloader_for(tmp_path_factory.mktemp("fuzz"), transport, window=8, request_timeout_s=3600)
    stop = threading.Event()

    def run():
        with contextlib.suppress(DownloadError):
            downloader.download(command, stop=stop)

    thread = threading.Thread(target=run)
    thread.start()
    wait_until(lambda: transport.requested, 10, message="the first request")
    yield downloader, command
    stop.set()
    thread.join(10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=3000))
def test_on_chunk_never_raises_on_arbitrary_bytes(fuzz_target, payload):
    downloader, _ = fuzz_target
    downloader.on_chunk(payload)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    index=st.integers(0, 2**32 - 1), count=st.integers(0, 2**32 - 1), data=st.binary(max_size=2 * CHUNK),
    right_blob=st.booleans(),
)  # fmt: skip
def test_on_chunk_never_raises_on_well_framed_chunks(fuzz_target, index, count, data, right_blob):
    downloader, command = fuzz_target
    sha = command.blob_sha256 if right_blob else hashlib.sha256(data).hexdigest()
    header = b"FBC1" + bytes.fromhex(sha) + index.to_bytes(4, "big") + count.to_bytes(4, "big")
    downloader.on_chunk(header + hashlib.sha256(data).digest() + data)
