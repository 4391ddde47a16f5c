"""The database side of the MQTT ingest: presence, telemetry, command progress, in one transaction."""

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

import fleet_protocol as fp
from fleet_server.devices.models import Command, CommandState, TelemetrySample
from fleet_server.devices.services import DeviceMessage, ingest_device_messages, send_command
from fleet_server.mqtt_bridge.models import OutboxMessage
from tests.fleet_server.conftest import make_device

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _msg(device, body, at=NOW) -> DeviceMessage:
    return DeviceMessage(device.pk, fp.envelope(body), at)


def _online(**fields) -> fp.StatusBody:
    hardware = fp.HardwareInfo(cpu_model="ARM Cortex-A72", cpu_count=4, memory_total_mb=3800, arch="aarch64")
    return fp.StatusBody(
        state="online", agent_version="0.2.0", runtimes=["cpu-int8"], hardware=hardware, **fields
    )  # fmt: skip


def test_online_status_updates_presence_and_what_the_device_reports(device):
    slots = [fp.ModelSlot(slot="a", model="park-detector", version=3, active=True)]
    status = _online(keepalive_s=20, telemetry_interval_s=5, models=slots, update_state="observe", scene_version=2)
    counts = ingest_device_messages([_msg(device, status)])

    device.refresh_from_db()
    assert counts["status"] == 1
    assert device.online and device.last_seen_at == NOW and device.status_changed_at == NOW
    assert device.agent_version == "0.2.0" and device.runtimes == ["cpu-int8"]
    assert device.hardware_info["cpu_model"] == "ARM Cortex-A72"
    assert (device.keepalive_s, device.telemetry_interval_s) == (20, 5.0)
    assert device.heartbeat_deadline == NOW + timedelta(seconds=90)
    assert device.model_slots == [{"slot": "a", "model": "park-detector", "version": 3, "active": True}]
    assert (device.update_state, device.scene_version) == ("observe", 2)


def test_last_will_marks_the_device_offline_and_keeps_last_seen(device):
    ingest_device_messages([_msg(device, _online())])
    later = NOW + timedelta(minutes=3)

    ingest_device_messages([_msg(device, fp.StatusBody(state="offline"), at=later)])

    device.refresh_from_db()
    assert not device.online
    assert device.status_changed_at == later
    assert device.last_seen_at == NOW
    assert device.heartbeat_deadline is None


def test_telemetry_is_stored_and_counts_as_a_heartbeat(device):
    body = fp.TelemetryBody(
        cpu_percent=37.5, memory_percent=61.0, temperature_c=48.0, disk_free_mb=900,
        cameras=[fp.CameraTelemetry(camera="gate", fps=14.5)], queues={"outbox": 3},
    )  # fmt: skip
    ingest_device_messages([_msg(device, body)])

    sample = TelemetrySample.objects.get(device=device)
    assert (sample.cpu_percent, sample.memory_percent, sample.temperature_c) == (37.5, 61.0, 48.0)
    assert sample.details["cameras"] == [{"camera": "gate", "fps": 14.5, "dropped_frames": 0}]
    assert sample.details["queues"] == {"outbox": 3}
    device.refresh_from_db()
    assert device.online and device.last_seen_at == NOW


def test_an_event_is_a_sign_of_life_and_nothing_else_here(device):
    body = fp.EventBody(
        event_id="0b5c4f5e-8f0a-4a57-9a43-2a1f8c3e9d10", seq=1, rule="line_count", camera="gate", zone="entry",
        start=1.8e9,
    )  # fmt: skip
    counts = ingest_device_messages([_msg(device, body)])

    assert counts["unexpected_type"] == 0
    device.refresh_from_db()
    assert device.online and device.last_seen_at == NOW
    assert device.heartbeat_deadline == NOW + timedelta(seconds=90)


def test_messages_apply_in_arrival_order_within_a_batch(device):
    batch = [
        _msg(device, _online()),
        _msg(device, fp.StatusBody(state="offline"), at=NOW + timedelta(seconds=1)),
        _msg(device, _online(), at=NOW + timedelta(seconds=2)),
    ]
    ingest_device_messages(batch)
    device.refresh_from_db()
    assert device.online and device.status_changed_at == NOW + timedelta(seconds=2)


def test_unknown_and_revoked_devices_change_nothing(site):
    revoked = make_device(site, "old", revoked_at=timezone.now())
    ghost = DeviceMessage("no-such-device", fp.envelope(_online()), NOW)

    counts = ingest_device_messages([ghost, _msg(revoked, _online())])

    assert counts["unknown_device"] == 2
    revoked.refresh_from_db()
    assert not revoked.online


@pytest.fixture
def command(device):
    return send_command(device, "ping")


def _ack(command, state, **kwargs) -> fp.CommandAckBody:
    return fp.CommandAckBody(command_id=str(command.pk), state=state, **kwargs)


def test_acks_move_a_command_forward(device, command):
    ingest_device_messages([_msg(device, _ack(command, fp.AckState.RECEIVED))])
    command.refresh_from_db()
    assert command.state == CommandState.RECEIVED

    ingest_device_messages([_msg(device, _ack(command, fp.AckState.DONE, reason="pong"))])
    command.refresh_from_db()
    assert (command.state, command.reason) == (CommandState.DONE, "pong")


def test_a_late_duplicate_ack_does_not_reopen_a_finished_command(device, command):
    ingest_device_messages(
        [_msg(device, _ack(command, fp.AckState.DONE)), _msg(device, _ack(command, fp.AckState.RECEIVED))]
    )
    command.refresh_from_db()
    assert command.state == CommandState.DONE


def test_a_device_cannot_ack_another_devices_command(site, device, command):
    intruder = make_device(site, "intruder")
    counts = ingest_device_messages([_msg(intruder, _ack(command, fp.AckState.FAILED, reason="ha"))])
    command.refresh_from_db()
    assert command.state == CommandState.QUEUED
    assert counts["ack_ignored"] == 1


def test_coming_online_redelivers_commands_the_device_has_not_received(device, command):
    Command.objects.filter(pk=command.pk).update(state=CommandState.SENT)
    OutboxMessage.objects.update(published_at=timezone.now())
    before = OutboxMessage.objects.count()

    counts = ingest_device_messages([_msg(device, _online())])

    assert counts["redelivered"] == 1
    assert OutboxMessage.objects.count() == before + 1
    message = fp.decode(bytes(OutboxMessage.objects.order_by("-id").first().payload))
    assert message.body.command_id == str(command.pk)


def test_a_command_still_waiting_in_the_outbox_is_not_queued_twice(device, command):
    counts = ingest_device_messages([_msg(device, _online())])
    assert counts["redelivered"] == 0
    assert OutboxMessage.objects.filter(correlation_id=command.pk).count() == 1
