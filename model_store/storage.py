"""Content-addressed blob storage for package ciphertexts: write-once blobs named by the sha256 of their bytes."""

import hashlib
import os
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

_DIGEST = re.compile(r"[0-9a-f]{64}")
_SHARD = re.compile(r"[0-9a-f]{2}")
# An upload's temp file untouched this long belongs to a crashed or abandoned writer.
STALE_TEMP_AGE_S = 3600.0


class BlobTooLarge(ValueError):
    """An upload went over its size limit; nothing was stored."""


class BlobNotFound(LookupError):
    """No blob with that digest is stored."""


def check_digest(digest) -> str:
    """`digest` if it is a sha256 in 64 lowercase hex digits; anything else (paths included) raises ValueError."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ValueError(f"a blob digest is a sha256 in 64 lowercase hex digits, got {digest!r:.80}")
    return digest


class BlobStore(ABC):
    """Write-once blobs addressed by the sha256 of their content; storing the same bytes twice stores them once."""

    @abstractmethod
    def put_stream(self, chunks: Iterable[bytes], max_bytes: int) -> str:
        """Store the concatenated chunks and return their digest; more than `max_bytes` raises BlobTooLarge as soon
        as the limit is passed, without reading further and without storing anything."""

    def put_bytes(self, data: bytes) -> str:
        return self.put_stream([data], max_bytes=len(data))

    @abstractmethod
    def open(self, digest: str) -> BinaryIO:
        """A binary file object reading the blob; BlobNotFound if it is not stored."""

    def read(self, digest: str) -> bytes:
        with self.open(digest) as blob:
            return blob.read()

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def size(self, digest: str) -> int:
        """The blob's length in bytes; BlobNotFound if it is not stored."""

    @abstractmethod
    def delete(self, digest: str) -> bool:
        """Remove the blob; False if it was not stored."""

    @abstractmethod
    def digests(self) -> Iterator[str]:
        """The digest of every stored blob."""

    @abstractmethod
    def collect_garbage(self, referenced: set[str], *, min_age_s: float = 0.0) -> list[str]:
        """Delete every blob not in `referenced` (and older than `min_age_s`) plus abandoned uploads; returns the
        deleted digests. A caller whose uploads commit their references after the blob is stored passes a
        `min_age_s` longer than that gap, so a blob that is about to be referenced survives."""


class FileSystemBlobStore(BlobStore):
    """Blobs as read-only files `root/ab/cd/<digest>`; uploads go through `root/tmp` (same file system).

    A blob appears in one hard link of a complete, fsynced temp file, which fails rather than replace a file that
    is already there: a reader never sees a partial blob and a stored blob is never rewritten.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.temp_dir = self.root / "tmp"

    def path(self, digest: str) -> Path:
        """Where the blob with this digest lives (for serving it as a file)."""
        check_digest(digest)
        return self.root / digest[:2] / digest[2:4] / digest

    def put_stream(self, chunks: Iterable[bytes], max_bytes: int) -> str:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        self.temp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.temp_dir, prefix="upload-", suffix=".part")
        try:
            digest = self._write_temporary(descriptor, chunks, max_bytes)
            final = self.path(digest)
            final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(temporary, 0o400)
            try:
                os.link(temporary, final)
            except FileExistsError:
                # Already stored: keep the file, but restart its garbage-collection grace period.
                os.utime(final)
            else:
                for directory in (final.parent, final.parent.parent, self.root):
                    _fsync_directory(directory)
            return digest
        finally:
            Path(temporary).unlink(missing_ok=True)

    @staticmethod
    def _write_temporary(descriptor: int, chunks: Iterable[bytes], max_bytes: int) -> str:
        hasher, total = hashlib.sha256(), 0
        with os.fdopen(descriptor, "wb") as file:
            for chunk in chunks:
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise ValueError(f"blob chunks must be bytes, got {type(chunk).__name__}")
                total += memoryview(chunk).nbytes
                if total > max_bytes:
                    raise BlobTooLarge(f"blob is over the limit of {max_bytes} bytes; nothing was stored")
                hasher.update(chunk)
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        return hasher.hexdigest()

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest} in {self.root}") from None

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {digest} in {self.root}") from None

    def delete(self, digest: str) -> bool:
        try:
            self.path(digest).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[str]:
        for first in _subdirectories(self.root):
            for second in _subdirectories(first):
                with os.scandir(second) as entries:
                    names = [entry.name for entry in entries]
                for name in names:
                    if _DIGEST.fullmatch(name) and name[:2] == first.name and name[2:4] == second.name:
                        yield name

    def collect_garbage(self, referenced: set[str], *, min_age_s: float = 0.0) -> list[str]:
        keep = {check_digest(digest) for digest in referenced}
        now = time.time()
        deleted = []
        for digest in list(self.digests()):
            if digest in keep:
                continue
            try:
                age = now - self.path(digest).stat().st_mtime
            except FileNotFoundError:
                continue
            if age >= min_age_s and self.delete(digest):
                deleted.append(digest)
        if self.temp_dir.is_dir():
            with os.scandir(self.temp_dir) as entries:
                temporaries = list(entries)
            for entry in temporaries:
                try:
                    if now - entry.stat().st_mtime > STALE_TEMP_AGE_S:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    continue
        return deleted


def _subdirectories(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    with os.scandir(directory) as entries:
        shards = [
            Path(entry.path)
            for entry in entries
            if _SHARD.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        ]
    yield from shards


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
