"""Typed message envelopes ``{v, type, id, ts, body}`` for every JSON channel.

Each envelope is a frozen msgspec Struct tagged by ``type``; bodies reject unknown fields and
out-of-range values, so a message that decodes is a message the receiver can act on.
"""

from enum import StrEnum
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# Bounds keep a hostile or broken sender from making a receiver allocate without limit.
ShortText = Annotated[str, Meta(max_length=128)]
Identifier = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Percent = Annotated[float, Meta(ge=0, le=100)]
NonNegative = Annotated[float, Meta(ge=0, le=1e12)]
Timestamp = Annotated[float, Meta(ge=0, le=1e11)]  # seconds since the epoch, UTC
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
Uuid = Annotated[
    str, Meta(pattern=r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
]
Reason = Annotated[str, Meta(max_length=500)]
# A scene configuration (smartpark.geometry.SceneConfig.to_dict()); the agent validates it with smartpark.
SceneConfigDict = Annotated[dict[str, object], Meta(max_length=16)]


class _Body(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


# --- status (retained; also the Last Will) -------------------------------------------------


class HardwareInfo(_Body):
    cpu_model: ShortText = ""
    cpu_count: Annotated[int, Meta(ge=0, le=4096)] = 0
    memory_total_mb: NonNegative = 0
    os: ShortText = ""
    arch: ShortText = ""
    accelerators: Annotated[list[ShortText], Meta(max_length=16)] = []


class ModelSlot(_Body):
    slot: Literal["a", "b"]
    model: ShortText
    version: Annotated[int, Meta(ge=0)]
    active: bool = False


class StatusBody(_Body):
    state: Literal["online", "offline"]
    agent_version: ShortText = ""
    kind: ShortText = ""
    runtimes: Annotated[list[Identifier], Meta(max_length=16)] = []
    models: Annotated[list[ModelSlot], Meta(max_length=2)] = []
    hardware: HardwareInfo | None = None
    keepalive_s: Annotated[int, Meta(ge=0, le=3600)] = 0
    telemetry_interval_s: Annotated[float, Meta(ge=0, le=86400)] = 0
    # The update state machine's state (edge_agent.update) and the command it is working on.
    update_state: ShortText = ""
    update_command_id: Identifier | None = None
    scene_version: Annotated[int, Meta(ge=0)] = 0


# --- telemetry ---------------------------------------------------------------------------


class CameraTelemetry(_Body):
    camera: Identifier
    fps: NonNegative = 0
    dropped_frames: Annotated[int, Meta(ge=0)] = 0


class RuntimeTelemetry(_Body):
    runtime: Identifier
    latency_p50_ms: NonNegative = 0
    latency_p95_ms: NonNegative = 0


class TelemetryBody(_Body):
    cpu_percent: Percent
    memory_percent: Percent
    memory_used_mb: NonNegative = 0
    load_1m: NonNegative = 0
    temperature_c: Annotated[float, Meta(ge=-100, le=250)] | None = None
    disk_free_mb: NonNegative | None = None
    uptime_s: NonNegative = 0
    cameras: Annotated[list[CameraTelemetry], Meta(max_length=64)] = []
    runtimes: Annotated[list[RuntimeTelemetry], Meta(max_length=16)] = []
    queues: Annotated[dict[Identifier, Annotated[int, Meta(ge=0)]], Meta(max_length=32)] = {}


MAX_CHUNK_BYTES = 256 * 1024  # a blob chunk's payload limit (fleet_protocol.chunks)
MAX_WINDOW = 64  # chunks a device may ask for at once

# --- cmd: one struct per command, tagged by ``name`` -----------------------------------------


class _Command(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="name"):
    command_id: Identifier
    # A command that reaches the device after this moment is refused instead of run late.
    expires_at: Timestamp | None = None


class PingCommand(_Command, tag="ping"):
    """Round trip check: the agent answers ``done`` at once."""


class SetTelemetryIntervalCommand(_Command, tag="set_telemetry_interval"):
    interval_s: Annotated[float, Meta(ge=1, le=3600)]


class DeployCommand(_Command, tag="deploy"):
    """Download, verify, decrypt, install, self-test, activate, observe, then commit or roll back.

    The blob is the encrypted package (sha256 of the ciphertext); ``wrapped_key`` is its content
    key wrapped for this one device (model_store.crypto.wrap_content_key, base64).
    ``scene_configs`` (optional) replace the cameras' zones together with the model and roll back
    with it.
    """

    model: ShortText
    version: Annotated[int, Meta(ge=1)]
    blob_sha256: Sha256Hex
    blob_size: Annotated[int, Meta(ge=1, le=4 * 1024**3)]
    chunk_size: Annotated[int, Meta(ge=1024, le=MAX_CHUNK_BYTES)]
    wrapped_key: Annotated[str, Meta(min_length=1, max_length=512)]
    scene_configs: Annotated[list[SceneConfigDict], Meta(max_length=64)] = []
    observe_s: Annotated[float, Meta(ge=0, le=86400)] | None = None


class RollbackCommand(_Command, tag="rollback"):
    """Go back to the previous slot (model and scene configuration together)."""

    reason: Reason = ""


class SceneConfigCommand(_Command, tag="scene_config"):
    """New zones for some cameras, through the same install/observe/commit flow as a model."""

    version: Annotated[int, Meta(ge=1)]
    scene_configs: Annotated[list[SceneConfigDict], Meta(min_length=1, max_length=64)]
    observe_s: Annotated[float, Meta(ge=0, le=86400)] | None = None


CommandBody = PingCommand | SetTelemetryIntervalCommand | DeployCommand | RollbackCommand | SceneConfigCommand


# --- cmd/ack -------------------------------------------------------------------------------


class AckState(StrEnum):
    RECEIVED = "received"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    INSTALLED = "installed"
    HEALTHY = "healthy"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


TERMINAL_ACK_STATES = frozenset({AckState.DONE, AckState.HEALTHY, AckState.FAILED, AckState.ROLLED_BACK})


class CommandAckBody(_Body):
    command_id: Identifier
    state: AckState
    progress: Percent | None = None
    reason: Annotated[str, Meta(max_length=500)] = ""


# --- blob/req: the device asks for the chunks it still lacks ---------------------------------------


class BlobRequestBody(_Body):
    """Send me these chunks of this blob (for this deploy command); at most ``MAX_WINDOW`` at a time."""

    command_id: Identifier
    blob_sha256: Sha256Hex
    chunks: Annotated[list[Annotated[int, Meta(ge=0, le=2**31)]], Meta(min_length=1, max_length=MAX_WINDOW)]


# --- events -------------------------------------------------------------------------------


class EventBody(_Body):
    """One smart-park event (smartpark.events.Event) with wall-clock times.

    ``seq`` increases by one per event on a device (the on-disk outbox's order), so the platform
    can tell gaps from duplicates; ``event_id`` makes ingest idempotent.
    """

    event_id: Uuid
    seq: Annotated[int, Meta(ge=0)]
    rule: Literal["occupancy", "fire_lane", "intrusion", "line_count", "off_duty", "inactivity"]
    camera: Identifier
    zone: ShortText
    start: Timestamp
    end: Timestamp | None = None
    confidence: Annotated[float, Meta(ge=0, le=1)] = 1.0
    attributes: Annotated[dict[ShortText, str | int | float | bool | None], Meta(max_length=16)] = {}
    model: ShortText = ""
    model_version: Annotated[int, Meta(ge=0)] = 0
    scene_version: Annotated[int, Meta(ge=0)] = 0


# --- envelopes -----------------------------------------------------------------------------


class _Envelope(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    v: Literal[1]
    id: Identifier
    ts: Timestamp


class StatusMessage(_Envelope, tag="status"):
    body: StatusBody


class TelemetryMessage(_Envelope, tag="telemetry"):
    body: TelemetryBody


class CommandMessage(_Envelope, tag="cmd"):
    body: CommandBody


class CommandAckMessage(_Envelope, tag="cmd/ack"):
    body: CommandAckBody


class BlobRequestMessage(_Envelope, tag="blob/req"):
    body: BlobRequestBody


class EventMessage(_Envelope, tag="event"):
    body: EventBody


Message = StatusMessage | TelemetryMessage | CommandMessage | CommandAckMessage | BlobRequestMessage | EventMessage
