"""Event ingest: idempotent by event_id, ends fill in and never clear, occupancy moves only forward."""

import uuid
from datetime import UTC, datetime

import pytest
from django.utils import timezone

import fleet_protocol as fp
from fleet_server.devices.services import DeviceMessage
from fleet_server.events.models import Event, SpaceOccupancy
from fleet_server.events.services import ingest_events, occupancy_series, occupancy_summary
from tests.fleet_server.conftest import make_device

T0 = 1_800_000_000.0


def message(device_id: str, seq: int = 1, **fields) -> DeviceMessage:
    body = {"event_id": str(uuid.uuid4()), "seq": seq, "rule": "occupancy", "camera": "cam-1", "zone": "N1",
            "start": T0, "attributes": {"state": "occupied"}, **fields}  # fmt: skip
    return DeviceMessage(device_id, fp.envelope(fp.EventBody(**body)), timezone.now())


def again(item: DeviceMessage, **fields) -> DeviceMessage:
    body = fp.EventBody(**{**{f: getattr(item.message.body, f) for f in item.message.body.__struct_fields__}, **fields})
    return DeviceMessage(item.device_id, fp.envelope(body), timezone.now())


@pytest.mark.django_db
def test_events_are_stored_once_with_the_topic_device_and_its_site(device):
    # given
    first = message(device.pk, seq=1)
    # when the same message arrives twice, in one batch and in a later one
    assert ingest_events([first, first])["event"] == 2
    ingest_events([first])
    # then one row, with the device's site
    (event,) = Event.objects.all()
    assert str(event.event_id) == first.message.body.event_id
    assert (event.device_id, event.site_id, event.seq, event.rule) == (device.pk, device.site_id, 1, "occupancy")
    assert event.start == datetime.fromtimestamp(T0, tz=UTC)


@pytest.mark.django_db
def test_an_alert_end_fills_in_and_is_never_cleared(device):
    # given an open fire-lane alert
    opened = message(device.pk, seq=1, rule="fire_lane", zone="fire", attributes={})
    closed = again(opened, seq=2, end=T0 + 40, attributes={"duration": 40.0})
    ingest_events([opened])
    assert Event.objects.get().end is None
    # when its end arrives, then the start again (redelivery), then the end again
    ingest_events([closed])
    ingest_events([opened, closed])
    # then one row, closed, with the end's attributes
    (event,) = Event.objects.all()
    assert event.end == datetime.fromtimestamp(T0 + 40, tz=UTC)
    assert event.attributes == {"duration": 40.0}


@pytest.mark.django_db
def test_end_before_start_still_ends_closed(device):
    opened = message(device.pk, seq=1, rule="intrusion", zone="yard", attributes={})
    ingest_events([again(opened, seq=2, end=T0 + 5)])
    ingest_events([opened])
    assert Event.objects.get().end is not None


@pytest.mark.django_db
def test_unknown_revoked_devices_and_other_devices_events_change_nothing(site, device):
    revoked = make_device(site, name="box-2", revoked_at=timezone.now())
    other = make_device(site, name="box-3")
    opened = message(device.pk, rule="fire_lane", zone="fire", attributes={})
    ingest_events([opened])
    # when another device sends the end of this device's alert, and unknown / revoked devices send events
    forged_end = DeviceMessage(other.pk, again(opened, end=T0 + 9).message, timezone.now())
    outcome = ingest_events([forged_end, message("no-such-device"), message(revoked.pk)])
    # then
    assert outcome["unknown_device"] == 2
    assert Event.objects.count() == 1 and Event.objects.get().end is None


@pytest.mark.django_db
def test_occupancy_moves_only_forward(device):
    # given the space became occupied at T0 + 10
    ingest_events([message(device.pk, start=T0 + 10)])
    # when an older "free" arrives late, and a newer "free" after it
    ingest_events([message(device.pk, start=T0, attributes={"state": "free"})])
    assert SpaceOccupancy.objects.get().occupied is True
    ingest_events([message(device.pk, start=T0 + 20, attributes={"state": "free"})])
    # then
    space = SpaceOccupancy.objects.get()
    assert space.occupied is False and space.since == datetime.fromtimestamp(T0 + 20, tz=UTC)
    assert occupancy_summary(device.site)["free"] == 1


@pytest.mark.django_db
def test_occupancy_series_counts_occupied_spaces_over_time(device):
    ingest_events([message(device.pk, zone="N1", start=T0), message(device.pk, zone="N2", start=T0 + 60),
                   message(device.pk, zone="N1", start=T0 + 120, attributes={"state": "free"})])  # fmt: skip
    series = occupancy_series(device.site, hours=1, now=datetime.fromtimestamp(T0 + 600, tz=UTC))
    assert series["occupied"] == [0, 1, 2, 1, 1]
