"""The one codec for JSON messages: encode, and decode-or-refuse with a reason.

``decode`` raises only ``ProtocolError`` (a ``ValueError``) whatever bytes it is given; the
caller counts, logs and drops the message, and never half-applies it.
"""

import time
import uuid

import msgspec

from fleet_protocol.messages import (
    BlobRequestBody,
    BlobRequestMessage,
    CommandAckBody,
    CommandAckMessage,
    CommandBody,
    CommandMessage,
    EventBody,
    EventMessage,
    Message,
    StatusBody,
    StatusMessage,
    TelemetryBody,
    TelemetryMessage,
)
from fleet_protocol.topics import Channel

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 256 * 1024

_BODY_ENVELOPE = {
    StatusBody: StatusMessage,
    TelemetryBody: TelemetryMessage,
    CommandAckBody: CommandAckMessage,
    BlobRequestBody: BlobRequestMessage,
    EventBody: EventMessage,
}
_CHANNEL_MESSAGE: dict[Channel, type] = {
    Channel.STATUS: StatusMessage,
    Channel.TELEMETRY: TelemetryMessage,
    Channel.CMD: CommandMessage,
    Channel.CMD_ACK: CommandAckMessage,
    Channel.BLOB_REQ: BlobRequestMessage,
    Channel.EVENTS: EventMessage,
}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


class ProtocolError(ValueError):
    """A message that is not valid under this protocol; ``reason`` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _CommandHeader(msgspec.Struct):
    """Just enough of a ``cmd`` message to answer a command this agent cannot run."""

    class _Body(msgspec.Struct):
        command_id: str

    body: _Body


def envelope(body) -> Message:
    """Wrap a body in a fresh envelope (new id, current time)."""
    if isinstance(body, CommandBody):
        cls = CommandMessage
    else:
        try:
            cls = _BODY_ENVELOPE[type(body)]
        except KeyError:
            raise TypeError(f"{type(body).__name__} is not a message body") from None
    return cls(v=PROTOCOL_VERSION, id=uuid.uuid4().hex, ts=time.time(), body=body)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def _check_size(data) -> bytes:
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ProtocolError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_BYTES}")
    return data


def decode(data: bytes) -> Message:
    """Decode and validate any JSON message; raise ProtocolError with the reason if invalid."""
    data = _check_size(data)
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ProtocolError(str(exc)) from None
    except (RecursionError, UnicodeError, OverflowError, ValueError) as exc:
        raise ProtocolError(f"undecodable message: {exc.__class__.__name__}") from None


def decode_for_channel(channel: Channel, data: bytes) -> Message:
    """Decode a message that arrived on ``channel``; its type must be that channel's type."""
    message = decode(data)
    expected = _CHANNEL_MESSAGE.get(Channel(channel))
    if expected is None:
        raise ProtocolError(f"channel {channel!s} does not carry JSON messages")
    if not isinstance(message, expected):
        raise ProtocolError(f"a {type(message).__name__} does not belong on channel {channel!s}")
    return message


def peek_command_id(data: bytes) -> str | None:
    """The command id of a ``cmd`` payload that failed to decode, so the agent can refuse it by id."""
    try:
        header = msgspec.json.decode(_check_size(data), type=_CommandHeader)
    except (ProtocolError, msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError):
        return None
    command_id = header.body.command_id
    return command_id if 0 < len(command_id) <= 64 else None
