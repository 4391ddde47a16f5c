"""The binary chunk format of the ``blob`` channel: a fixed 76-byte header, then the chunk's bytes.

    magic "FBC1" | blob sha256 (32 bytes) | index (u32, big-endian) | count (u32) | chunk sha256 (32) | data

A device checks every field before it writes a byte: the magic, the blob it is downloading, the
index against the count it expects, the payload size against the chunk size, and the payload's
own sha256. ``decode_chunk`` raises ``ProtocolError`` for anything else, whatever bytes it is given.
"""

import hashlib
import struct
from dataclasses import dataclass

from fleet_protocol.codec import ProtocolError
from fleet_protocol.messages import MAX_CHUNK_BYTES

MAGIC = b"FBC1"
_HEADER = struct.Struct(">4s32sII32s")
HEADER_BYTES = _HEADER.size  # 76


@dataclass(frozen=True)
class Chunk:
    blob_sha256: str  # hex
    index: int
    count: int
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def chunk_count(blob_size: int, chunk_size: int) -> int:
    if blob_size <= 0 or chunk_size <= 0:
        raise ValueError("blob and chunk sizes must be positive")
    return -(-blob_size // chunk_size)


def encode_chunk(chunk: Chunk) -> bytes:
    if len(chunk.data) > MAX_CHUNK_BYTES:
        raise ValueError(f"a chunk holds at most {MAX_CHUNK_BYTES} bytes, not {len(chunk.data)}")
    if not 0 <= chunk.index < chunk.count:
        raise ValueError(f"chunk index {chunk.index} is outside 0..{chunk.count - 1}")
    header = _HEADER.pack(
        MAGIC, bytes.fromhex(chunk.blob_sha256), chunk.index, chunk.count, hashlib.sha256(chunk.data).digest()
    )
    return header + chunk.data


def decode_chunk(payload) -> Chunk:
    """Parse and check a chunk's framing and its own hash (not yet whether the device wants it)."""
    if isinstance(payload, bytearray | memoryview):
        payload = bytes(payload)
    if not isinstance(payload, bytes):
        raise ProtocolError(f"expected bytes, got {type(payload).__name__}")
    if len(payload) < HEADER_BYTES:
        raise ProtocolError(f"a chunk of {len(payload)} bytes is shorter than its {HEADER_BYTES}-byte header")
    if len(payload) > HEADER_BYTES + MAX_CHUNK_BYTES:
        raise ProtocolError(f"a chunk of {len(payload) - HEADER_BYTES} bytes exceeds the limit of {MAX_CHUNK_BYTES}")
    magic, blob, index, count, digest = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise ProtocolError("not a blob chunk (bad magic)")
    if count == 0 or index >= count:
        raise ProtocolError(f"chunk index {index} is outside 0..{count - 1}")
    data = payload[HEADER_BYTES:]
    if hashlib.sha256(data).digest() != digest:
        raise ProtocolError(f"chunk {index} does not match its sha256")
    return Chunk(blob_sha256=blob.hex(), index=index, count=count, data=data)
