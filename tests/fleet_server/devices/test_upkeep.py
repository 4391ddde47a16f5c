from datetime import timedelta

from django.utils import timezone

from fleet_server.devices.models import Command, CommandState, Device, TelemetrySample
from fleet_server.devices.services import (
    expire_commands,
    mark_silent_devices_offline,
    prune_telemetry,
    send_command,
)
from tests.fleet_server.conftest import make_device


def test_devices_whose_heartbeat_stopped_go_offline(site):
    now = timezone.now()
    silent = make_device(site, "silent", online=True, heartbeat_deadline=now - timedelta(seconds=1))
    alive = make_device(site, "alive", online=True, heartbeat_deadline=now + timedelta(seconds=30))

    assert mark_silent_devices_offline(now) == 1

    assert not Device.objects.get(pk=silent.pk).online
    assert Device.objects.get(pk=alive.pk).online


def test_commands_without_a_final_answer_expire(device):
    stale = send_command(device, "ping", ttl_s=60)
    answered = send_command(device, "ping", ttl_s=60)
    Command.objects.filter(pk=answered.pk).update(state=CommandState.DONE)

    assert expire_commands(timezone.now() + timedelta(minutes=2)) == 1

    stale.refresh_from_db()
    assert stale.state == CommandState.EXPIRED and "expired" in stale.reason
    assert Command.objects.get(pk=answered.pk).state == CommandState.DONE


def test_telemetry_older_than_the_retention_is_pruned(device, settings):
    settings.TELEMETRY_RETENTION_HOURS = 24
    now = timezone.now()
    for age_hours in (1, 23, 25, 48):
        at = now - timedelta(hours=age_hours)
        TelemetrySample.objects.create(
            device=device, received_at=at, reported_at=at, cpu_percent=1, memory_percent=1
        )  # fmt: skip

    assert prune_telemetry(now) == 2
    assert TelemetrySample.objects.count() == 2
