"""Chunked, resumable blob download over MQTT (docs/protocol.md, "Blob transfer").

The device asks for a window of the chunks it still lacks (``blob/req``); the platform answers
with binary chunks on ``blob``. Each chunk is checked (framing, its own sha256, the blob, the
count, its size, whether it was asked for) before a byte is written; it is written at its offset
in ``<sha>.part`` and fsynced, and only then appended to ``<sha>.have`` (a small append-only log
of chunk indices, fsynced too), so a SIGKILL never marks a chunk that is not on disk. A new
downloader on the same directory continues from the chunks already present. When every chunk is
there and the file's sha256 is the command's, the file is renamed atomically to ``<sha>.blob``.
"""

import contextlib
import hashlib
import logging
import os
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import fleet_protocol as fp
from edge_agent.files import fsync_directory

logger = logging.getLogger(__name__)

_HAVE_MAGIC = b"FBH1"
_HAVE_HEADER = struct.Struct(">4sQQ")  # magic, blob size, chunk size
_INDEX = struct.Struct(">I")
# How often the download loop looks at the clock when nothing arrives.
_TICK_S = 0.1


class DownloadError(Exception):
    """A download that did not produce the blob; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1024 * 1024):
            hasher.update(block)
    return hasher.hexdigest()


class _Download:
    """One blob being downloaded: its files, which chunks are on disk, which are asked for."""

    def __init__(self, directory: Path, command: fp.DeployCommand):
        self.sha = command.blob_sha256
        self.command_id = command.command_id
        self.blob_size = command.blob_size
        self.chunk_size = command.chunk_size
        self.count = fp.chunk_count(command.blob_size, command.chunk_size)
        self.part_path = directory / f"{self.sha}.part"
        self.have_path = directory / f"{self.sha}.have"
        self.have = bytearray(self.count)  # 1 where the chunk is on disk
        self.have_count = 0
        self.requested: set[int] = set()  # asked for and not yet here
        self.last_progress = time.monotonic()
        self.resend_now = False
        self.arrived = threading.Event()
        self._open()

    def _open(self) -> None:
        header = _HAVE_HEADER.pack(_HAVE_MAGIC, self.blob_size, self.chunk_size)
        indices = self._read_have(header)
        if indices is None or not self.part_path.exists() or self.part_path.stat().st_size != self.blob_size:
            # Nothing usable from an earlier run: start afresh.
            indices = []
            self.have_path.unlink(missing_ok=True)
            with open(self.part_path, "wb") as part:
                part.truncate(self.blob_size)
                os.fsync(part.fileno())
            with open(self.have_path, "wb") as have:
                have.write(header)
                have.flush()
                os.fsync(have.fileno())
            fsync_directory(self.part_path.parent)
        for index in indices:
            if not self.have[index]:
                self.have[index] = 1
                self.have_count += 1
        if self.have_count:
            logger.info(
                "blob %s: resuming with %d of %d chunks already on disk", self.sha[:12], self.have_count, self.count
            )
        self.part_fd = os.open(self.part_path, os.O_RDWR)
        self.have_fd = os.open(self.have_path, os.O_WRONLY | os.O_APPEND)

    def _read_have(self, header: bytes) -> list[int] | None:
        try:
            data = self.have_path.read_bytes()
        except FileNotFoundError:
            return None
        if not data.startswith(header):
            return None
        body = data[len(header) :]
        whole = len(body) - len(body) % _INDEX.size  # a torn last record is ignored
        indices = [index for (index,) in _INDEX.iter_unpack(body[:whole])]
        if any(index >= self.count for index in indices):
            return None
        return indices

    def expected_size(self, index: int) -> int:
        if index < self.count - 1:
            return self.chunk_size
        return self.blob_size - self.chunk_size * (self.count - 1)

    def write(self, index: int, data: bytes) -> None:
        os.pwrite(self.part_fd, data, index * self.chunk_size)
        os.fsync(self.part_fd)
        os.write(self.have_fd, _INDEX.pack(index))
        os.fsync(self.have_fd)
        self.have[index] = 1
        self.have_count += 1
        self.requested.discard(index)
        self.last_progress = time.monotonic()
        self.arrived.set()

    def missing(self, limit: int) -> list[int]:
        """Up to ``limit`` chunks neither on disk nor asked for, lowest first."""
        found = []
        for index in range(self.count):
            if not self.have[index] and index not in self.requested:
                found.append(index)
                if len(found) >= limit:
                    break
        return found

    def close(self) -> None:
        for descriptor in (self.part_fd, self.have_fd):
            with contextlib.suppress(OSError):
                os.close(descriptor)


class BlobDownloader:
    """Download blobs chunk by chunk; ``on_chunk`` is fed from the MQTT thread, ``download`` blocks."""

    def __init__(
        self,
        directory: Path,
        send_request: Callable[[fp.BlobRequestBody], None],
        *,
        window: int = 16,
        request_timeout_s: float = 5.0,
    ):
        if not 1 <= window <= fp.MAX_WINDOW:
            raise ValueError(f"window must be 1..{fp.MAX_WINDOW}, not {window}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.window = window
        self.request_timeout_s = request_timeout_s
        self._send_request = send_request
        self._lock = threading.Lock()
        self._active: dict[str, _Download] = {}
        self.refused: Counter = Counter()
        self.requests_sent = 0
        self.chunks_received = 0
        self.chunks_rerequested = 0

    def blob_path(self, blob_sha256: str) -> Path:
        return self.directory / f"{blob_sha256}.blob"

    # --- paho's network thread ---

    def on_chunk(self, payload: bytes) -> None:
        """Check a chunk and write it if it is one we asked for; never raises."""
        try:
            self._on_chunk(payload)
        except Exception:  # a full disk, say: the chunk is re-requested later
            self.refused["error"] += 1
            logger.exception("blob chunk could not be stored")

    def _on_chunk(self, payload: bytes) -> None:
        try:
            chunk = fp.decode_chunk(payload)
        except fp.ProtocolError as exc:
            return self._refuse("malformed", exc.reason)
        with self._lock:
            download = self._active.get(chunk.blob_sha256)
            if download is None:
                return self._refuse("unknown_blob", f"chunk {chunk.index} of {chunk.blob_sha256[:12]}")
            if chunk.count != download.count:
                return self._refuse("wrong_count", f"count {chunk.count}, expected {download.count}")
            if len(chunk.data) > download.chunk_size:
                return self._refuse("oversized", f"chunk {chunk.index}: {len(chunk.data)} > {download.chunk_size}")
            if len(chunk.data) != download.expected_size(chunk.index):
                return self._refuse("wrong_size", f"chunk {chunk.index}: {len(chunk.data)} bytes")
            if download.have[chunk.index]:
                self.refused["duplicate"] += 1  # harmless: a re-sent chunk that arrived twice
                return None
            if chunk.index not in download.requested:
                return self._refuse("out_of_window", f"chunk {chunk.index} was not asked for")
            download.write(chunk.index, chunk.data)
            self.chunks_received += 1
        return None

    def _refuse(self, reason: str, detail: str) -> None:
        self.refused[reason] += 1
        logger.warning("refused a blob chunk (%s): %s", reason, detail)

    # --- any thread ---

    def resend_outstanding(self) -> None:
        """Ask again at once for what is outstanding (call after a reconnect: in-flight chunks are lost)."""
        with self._lock:
            for download in self._active.values():
                download.resend_now = True
                download.arrived.set()

    def discard(self, blob_sha256: str) -> None:
        for suffix in (".part", ".have", ".blob"):
            (self.directory / f"{blob_sha256}{suffix}").unlink(missing_ok=True)

    def stats(self) -> dict:
        return {
            "requests_sent": self.requests_sent,
            "chunks_received": self.chunks_received,
            "chunks_rerequested": self.chunks_rerequested,
            "refused": dict(self.refused),
        }

    # --- the caller's thread ---

    def download(
        self,
        command: fp.DeployCommand,
        *,
        progress: Callable[[int, int], None] | None = None,
        stop: threading.Event | None = None,
        timeout_s: float | None = None,
    ) -> Path:
        """Block until the blob is complete and verified on disk; return ``<sha>.blob``."""
        final = self.blob_path(command.blob_sha256)
        if final.exists():
            if final.stat().st_size == command.blob_size and file_sha256(final) == command.blob_sha256:
                return final
            final.unlink()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._lock:
            if command.blob_sha256 in self._active:
                raise DownloadError(f"blob {command.blob_sha256} is already being downloaded")
            download = _Download(self.directory, command)
            self._active[command.blob_sha256] = download
        try:
            self._run(download, progress, stop, deadline)
        finally:
            with self._lock:
                self._active.pop(command.blob_sha256, None)
                download.close()
        return self._finish(download, final)

    def _run(self, download: _Download, progress, stop, deadline) -> None:
        reported = -1
        while True:
            download.arrived.clear()
            with self._lock:
                have = download.have_count
                resend: list[int] = []
                new: list[int] = []
                if have < download.count:
                    stalled = time.monotonic() - download.last_progress >= self.request_timeout_s
                    if download.requested and (download.resend_now or stalled):
                        resend = sorted(download.requested)
                        download.last_progress = time.monotonic()
                    download.resend_now = False
                    free = self.window - len(download.requested)
                    if free >= max(1, self.window // 4):
                        new = download.missing(free)
                        download.requested.update(new)
                        if new and not download.requested - set(new):
                            download.last_progress = time.monotonic()  # the clock starts with the first ask
            if progress is not None and have != reported:
                progress(have, download.count)
                reported = have
            if have >= download.count:
                return
            if stop is not None and stop.is_set():
                raise DownloadError("stopped")
            if deadline is not None and time.monotonic() > deadline:
                raise DownloadError(f"timed out with {have} of {download.count} chunks")
            if resend:
                self.chunks_rerequested += len(resend)
                logger.info("blob %s: asking again for %d chunk(s)", download.sha[:12], len(resend))
            self._request(download, sorted(set(resend) | set(new)))
            download.arrived.wait(_TICK_S)

    def _request(self, download: _Download, indices: list[int]) -> None:
        if not indices:
            return
        for start in range(0, len(indices), fp.MAX_WINDOW):
            body = fp.BlobRequestBody(
                command_id=download.command_id, blob_sha256=download.sha, chunks=indices[start : start + fp.MAX_WINDOW]
            )
            try:
                self._send_request(body)
            except Exception as exc:  # not connected, say: asked again after the timeout or a reconnect
                logger.warning("blob %s: could not send a chunk request: %s", download.sha[:12], exc)
                continue
            self.requests_sent += 1

    def _finish(self, download: _Download, final: Path) -> Path:
        digest = file_sha256(download.part_path)
        if digest != download.sha:
            self.discard(download.sha)
            raise DownloadError(f"the downloaded blob's sha256 is {digest}, not {download.sha}")
        os.replace(download.part_path, final)
        download.have_path.unlink(missing_ok=True)
        fsync_directory(self.directory)
        return final
