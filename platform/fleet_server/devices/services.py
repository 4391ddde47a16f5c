"""What the device registry does: enrollment, presence, telemetry, commands and their upkeep.

Views, the REST API, Celery tasks, the MQTT ingest and management commands all call these
functions; none of them talks to MQTT directly (commands leave through the outbox).
"""

import base64
import binascii
import hashlib
import logging
import secrets
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

import fleet_protocol as fp
from fleet_protocol.broker import BrokerAddress
from fleet_server.devices.models import (
    FINAL_COMMAND_STATES,
    Camera,
    ClaimToken,
    Command,
    CommandState,
    Device,
    DeviceKind,
    Site,
    TelemetrySample,
)
from fleet_server.mqtt_bridge import outbox
from fleet_server.mqtt_bridge.models import OutboxMessage
from fleet_server.registry.storage import signing_keyring

logger = logging.getLogger(__name__)


# --- claim tokens and enrollment ---------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_claim_secret() -> str:
    """32 URL-safe characters that never start with "-": `edge-agent enroll --token -x…` would read it as an option."""
    while (token := secrets.token_urlsafe(24)).startswith("-"):
        pass
    return token


def create_claim_token(
    site: Site, *, created_by=None, ttl: timedelta | None = None, note: str = ""
) -> tuple[ClaimToken, str]:
    """A one-time enrollment secret for ``site``; returns the row and the token, which is shown once."""
    ttl = ttl or timedelta(hours=settings.CLAIM_TOKEN_DEFAULT_TTL_HOURS)
    if ttl <= timedelta(0):
        raise ValueError("a claim token must live for a positive time")
    token = _new_claim_secret()
    claim = ClaimToken.objects.create(
        site=site,
        token_hash=_token_hash(token),
        note=note,
        created_by=created_by,
        expires_at=timezone.now() + ttl,
    )
    return claim, token


class EnrollmentError(Exception):
    """Enrollment refused; ``code`` is machine-readable, the message tells the installer what to do."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CameraSpec:
    camera_id: str
    name: str = ""


@dataclass(frozen=True)
class EnrollmentRequest:
    token: str
    name: str
    kind: str
    public_key: str
    agent_version: str = ""
    hardware: dict = field(default_factory=dict)
    cameras: tuple[CameraSpec, ...] = ()


@dataclass(frozen=True)
class Enrollment:
    device: Device
    mqtt_url: str
    mqtt_username: str
    mqtt_password: str
    # The package-signing public keys the device pins ({key_id: base64 raw Ed25519}).
    signing_keys: dict[str, str] = field(default_factory=dict)


def mosquitto_password_hash(password: str, *, salt: bytes | None = None, iterations: int = 101) -> str:
    """The PBKDF2-SHA512 format of Mosquitto 2's password file (``$7$iterations$salt$hash``)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_mosquitto_password(password: str, encoded: str) -> bool:
    try:
        _, scheme, iterations, salt, _digest = encoded.split("$")
        expected = mosquitto_password_hash(password, salt=base64.b64decode(salt), iterations=int(iterations))
    except (ValueError, binascii.Error):
        return False
    return scheme == "7" and secrets.compare_digest(expected, encoded)


def _validate_public_key(encoded: str) -> str:
    try:
        raw = base64.b64decode(encoded, validate=True)
        X25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise EnrollmentError(
            "invalid_public_key", "public_key must be a base64-encoded raw X25519 public key (32 bytes)"
        ) from None
    return base64.b64encode(raw).decode()


def enroll_device(request: EnrollmentRequest) -> Enrollment:
    """Exchange a claim token for a device identity and MQTT credentials; the token is spent."""
    if request.kind not in DeviceKind.values:
        raise EnrollmentError("invalid_kind", f"kind must be one of {', '.join(DeviceKind.values)}")
    public_key = _validate_public_key(request.public_key)
    now = timezone.now()
    with transaction.atomic():
        claim = (
            ClaimToken.objects.select_for_update()
            .select_related("site")
            .filter(token_hash=_token_hash(request.token))
            .first()
        )
        if claim is None:
            raise EnrollmentError("unknown_token", "this claim token is not known: check it was copied whole")
        if claim.used_at is not None:
            raise EnrollmentError(
                "token_used",
                f"this claim token was already used at {claim.used_at:%Y-%m-%d %H:%M} UTC; "
                "ask an operator for a new one",
            )
        if claim.expires_at <= now:
            raise EnrollmentError(
                "token_expired",
                f"this claim token expired at {claim.expires_at:%Y-%m-%d %H:%M} UTC; ask an operator for a new one",
            )
        password = secrets.token_urlsafe(32)
        device_id = str(uuid.uuid4())
        device = Device.objects.create(
            id=device_id,
            name=request.name.strip()[:200] or f"{request.kind}-{device_id[:8]}",
            kind=request.kind,
            site=claim.site,
            hardware_info=request.hardware,
            agent_version=request.agent_version[:64],
            public_key=public_key,
            mqtt_username=device_id,
            mqtt_password_hash=mosquitto_password_hash(password),
            keepalive_s=settings.AGENT_KEEPALIVE_S,
            telemetry_interval_s=settings.AGENT_TELEMETRY_INTERVAL_S,
        )
        Camera.objects.bulk_create(
            [Camera(device=device, camera_id=camera.camera_id, name=camera.name) for camera in request.cameras]
        )
        claim.used_at = now
        claim.device = device
        claim.save(update_fields=["used_at", "device"])
    logger.info("device %s (%s) enrolled at %s", device.pk, device.kind, claim.site)
    # Devices log in with their own credentials; the platform's own login (when MQTT_PUBLIC_URL falls
    # back to MQTT_URL) must never travel to them.
    public_broker = BrokerAddress.from_url(settings.MQTT_PUBLIC_URL).url()
    return Enrollment(
        device=device,
        mqtt_url=public_broker,
        mqtt_username=device.mqtt_username,
        mqtt_password=password,
        signing_keys=_pinned_signing_keys(),
    )


def _pinned_signing_keys() -> dict[str, str]:
    """Every unretired package-signing public key; the first enrollment creates the active key if none exists."""
    keyring = signing_keyring()
    keyring.active()
    return keyring.export_public()


# --- presence and telemetry (the MQTT ingest calls these) ------------------------------------------


@dataclass(frozen=True)
class DeviceMessage:
    device_id: str
    message: fp.Message
    received_at: datetime


_ACK_TO_COMMAND_STATE = {state: CommandState(state.value) for state in fp.AckState}


def heartbeat_grace(device: Device) -> timedelta:
    """How long a device may stay silent before the offline sweep marks it offline."""
    seconds = max(settings.DEVICE_OFFLINE_AFTER_S, 3 * device.telemetry_interval_s, 1.5 * device.keepalive_s)
    return timedelta(seconds=seconds)


def _from_epoch(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def ingest_device_messages(batch: list[DeviceMessage]) -> Counter:
    """Apply a batch of decoded device messages in one transaction, in arrival order.

    Returns counts by outcome (``status``, ``telemetry``, ``ack``, ``unknown_device``, ...).
    """
    outcome: Counter = Counter()
    if not batch:
        return outcome
    with transaction.atomic():
        devices = Device.objects.in_bulk({m.device_id for m in batch})
        changed: dict[str, set[str]] = {}
        samples: list[TelemetrySample] = []
        announced_online: set[str] = set()
        for item in batch:
            device = devices.get(item.device_id)
            if device is None or device.revoked_at is not None:
                outcome["unknown_device"] += 1
                continue
            fields = changed.setdefault(device.pk, set())
            message = item.message
            if isinstance(message, fp.StatusMessage):
                fields |= _apply_status(device, message.body, item.received_at)
                if message.body.state == "online":
                    announced_online.add(device.pk)
                outcome["status"] += 1
                continue
            # Anything but a status message is a sign of life, whatever state we last recorded.
            fields |= _mark_alive(device, item.received_at)
            if isinstance(message, fp.TelemetryMessage):
                samples.append(_telemetry_sample(device, message, item.received_at))
                outcome["telemetry"] += 1
            elif isinstance(message, fp.CommandAckMessage):
                outcome["ack" if _apply_ack(device, message.body) else "ack_ignored"] += 1
            elif not isinstance(message, fp.EventMessage):  # events: a sign of life here, stored by the events app
                outcome["unexpected_type"] += 1
        for device_id, fields in changed.items():
            if fields:
                Device.objects.filter(pk=device_id).update(**{f: getattr(devices[device_id], f) for f in fields})
        TelemetrySample.objects.bulk_create(samples)
        outcome["redelivered"] += redeliver_pending_commands(announced_online)
    return outcome


def _mark_alive(device: Device, at: datetime) -> set[str]:
    fields = {"last_seen_at", "heartbeat_deadline"}
    device.last_seen_at = at
    device.heartbeat_deadline = at + heartbeat_grace(device)
    if not device.online:
        device.online = True
        device.status_changed_at = at
        fields |= {"online", "status_changed_at"}
    return fields


def _apply_status(device: Device, body: fp.StatusBody, at: datetime) -> set[str]:
    if body.state == "offline":
        fields = {"heartbeat_deadline"}
        device.heartbeat_deadline = None
        if device.online:
            device.online = False
            device.status_changed_at = at
            fields |= {"online", "status_changed_at"}
        return fields
    device.agent_version = body.agent_version
    device.runtimes = list(body.runtimes)
    device.model_slots = [msgspec.to_builtins(slot) for slot in body.models]
    device.update_state = body.update_state
    device.scene_version = body.scene_version
    fields = {"agent_version", "runtimes", "model_slots", "update_state", "scene_version"}
    if body.hardware is not None:
        device.hardware_info = msgspec.to_builtins(body.hardware)
        fields.add("hardware_info")
    if body.keepalive_s:
        device.keepalive_s = body.keepalive_s
        fields.add("keepalive_s")
    if body.telemetry_interval_s:
        device.telemetry_interval_s = body.telemetry_interval_s
        fields.add("telemetry_interval_s")
    return fields | _mark_alive(device, at)


def _telemetry_sample(device: Device, message: fp.TelemetryMessage, at: datetime) -> TelemetrySample:
    body = message.body
    return TelemetrySample(
        device=device,
        received_at=at,
        reported_at=_from_epoch(message.ts),
        cpu_percent=body.cpu_percent,
        memory_percent=body.memory_percent,
        memory_used_mb=body.memory_used_mb,
        load_1m=body.load_1m,
        temperature_c=body.temperature_c,
        disk_free_mb=body.disk_free_mb,
        details=msgspec.to_builtins(
            {
                "uptime_s": body.uptime_s,
                "cameras": body.cameras,
                "runtimes": body.runtimes,
                "queues": body.queues,
            }
        ),
    )


def _apply_ack(device: Device, body: fp.CommandAckBody) -> bool:
    """Record a command's progress; acks for another device's command, or after a final state, change nothing."""
    try:
        command_id = uuid.UUID(body.command_id)
    except ValueError:
        return False
    updated = (
        Command.objects.filter(pk=command_id, device=device)
        .exclude(state__in=FINAL_COMMAND_STATES)
        .update(
            state=_ACK_TO_COMMAND_STATE[body.state],
            progress=body.progress,
            reason=body.reason,
            updated_at=timezone.now(),
        )
    )
    return bool(updated)


# --- upkeep (Celery beat calls these) ------------------------------------------------------------


def mark_silent_devices_offline(now: datetime | None = None) -> int:
    """Devices whose heartbeat stopped without a Last Will (a broker restart, a lost network)."""
    now = now or timezone.now()
    return Device.objects.filter(online=True, heartbeat_deadline__lt=now).update(
        online=False, status_changed_at=now, heartbeat_deadline=None
    )


def prune_telemetry(now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - timedelta(hours=settings.TELEMETRY_RETENTION_HOURS)
    deleted, _ = TelemetrySample.objects.filter(received_at__lt=cutoff).delete()
    return deleted


# --- commands ------------------------------------------------------------------------------------


class CommandError(ValueError):
    """A command that cannot be sent: unknown name, invalid arguments, or a device that cannot take it."""


def send_command(
    device: Device, name: str, args: dict | None = None, *, created_by=None, ttl_s: int | None = None
) -> Command:
    """Save a command and its MQTT message in one transaction; the outbox worker publishes it."""
    if device.revoked_at is not None:
        raise CommandError(f"device {device} is revoked and takes no commands")
    args = dict(args or {})
    ttl = timedelta(seconds=ttl_s or settings.COMMAND_DEFAULT_TTL_S)
    command = Command(device=device, name=name, args=args, created_by=created_by, expires_at=timezone.now() + ttl)
    try:
        message = _command_message(command)
    except msgspec.ValidationError as exc:
        raise CommandError(f"invalid command {name!r}: {exc}") from None
    with transaction.atomic():
        command.save()
        _enqueue(command, message)
    return command


def _command_message(command: Command) -> fp.CommandMessage:
    """The wire form of a command; raises msgspec.ValidationError for an unknown name or bad arguments."""
    fields = {**command.args, "name": command.name, "command_id": str(command.pk)}
    fields["expires_at"] = command.expires_at.timestamp()
    return fp.envelope(msgspec.convert(fields, fp.CommandBody))


def _enqueue(command: Command, message: fp.CommandMessage) -> None:
    topic = fp.topic(command.device_id, fp.Channel.CMD)
    outbox.enqueue(topic, fp.encode(message), qos=1, correlation_id=command.pk)


def redeliver_pending_commands(device_ids) -> int:
    """Publish again the commands these devices have not confirmed receiving.

    A device announces 'online' after every (re)connect, once it has subscribed to its commands;
    a command published while it was unsubscribed (first connection, a broker that lost its
    sessions) would otherwise be lost. The agent ignores a command id it has seen.
    """
    if not device_ids:
        return 0
    # A command whose message still waits in the outbox will go out anyway.
    waiting_in_outbox = OutboxMessage.objects.filter(correlation_id=OuterRef("pk"), published_at__isnull=True)
    pending = Command.objects.filter(
        device_id__in=device_ids,
        state__in=[CommandState.QUEUED, CommandState.SENT],
        expires_at__gt=timezone.now(),
    ).exclude(Exists(waiting_in_outbox))
    count = 0
    for command in pending:
        _enqueue(command, _command_message(command))
        count += 1
    return count


def mark_commands_sent(command_ids) -> int:
    """The broker took these commands; acks that already arrived are not overwritten."""
    return Command.objects.filter(pk__in=list(command_ids), state=CommandState.QUEUED).update(
        state=CommandState.SENT, updated_at=timezone.now()
    )


def expire_commands(now: datetime | None = None) -> int:
    now = now or timezone.now()
    return (
        Command.objects.filter(expires_at__lt=now)
        .exclude(state__in=FINAL_COMMAND_STATES)
        .update(state=CommandState.EXPIRED, reason="no final answer before the command expired", updated_at=now)
    )
