"""Event ingest (idempotent by event_id) and the park views built from events: occupancy, alerts, line counts."""

from collections import Counter
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

import fleet_protocol as fp
from fleet_server.devices.models import Device, Site
from fleet_server.devices.services import DeviceMessage
from fleet_server.events.models import ALERT_RULES, Event, Rule, SpaceOccupancy


def _when(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, tz=UTC)


def ingest_events(batch: list[DeviceMessage]) -> Counter:
    """Store a batch of event messages in one transaction; returns counts by outcome.

    The device is the topic's (never the body's); unknown and revoked devices change nothing. A repeated
    event_id inserts nothing; one that comes back with an end closes the open row (of the same device), and an
    end once set is never cleared, so redelivery in any order leaves the same rows.
    """
    outcome: Counter = Counter()
    if not batch:
        return outcome
    with transaction.atomic():
        devices = Device.objects.in_bulk({item.device_id for item in batch})
        rows: dict[str, Event] = {}
        ends: dict[tuple[str, str], fp.EventBody] = {}
        for item in batch:
            device = devices.get(item.device_id)
            if device is None or device.revoked_at is not None:
                outcome["unknown_device"] += 1
                continue
            if not isinstance(item.message, fp.EventMessage):
                outcome["unexpected_type"] += 1
                continue
            body = item.message.body
            event_id = str(body.event_id).lower()
            if event_id not in rows:
                rows[event_id] = _event_row(device, body, item.received_at)
            if body.end is not None:
                ends[(device.pk, event_id)] = body
            outcome["event"] += 1
        Event.objects.bulk_create(list(rows.values()), ignore_conflicts=True)
        for (device_id, event_id), body in ends.items():
            outcome["ended"] += Event.objects.filter(device_id=device_id, event_id=event_id, end__isnull=True).update(
                end=_when(body.end), attributes=dict(body.attributes), confidence=body.confidence
            )
        _apply_occupancy([row for row in rows.values() if row.rule == Rule.OCCUPANCY])
    return outcome


def _event_row(device: Device, body: fp.EventBody, received_at: datetime) -> Event:
    return Event(
        event_id=body.event_id,
        device=device,
        site_id=device.site_id,
        camera=body.camera,
        zone=body.zone,
        rule=body.rule,
        start=_when(body.start),
        end=_when(body.end) if body.end is not None else None,
        confidence=body.confidence,
        attributes=dict(body.attributes),
        model=body.model,
        model_version=body.model_version,
        scene_version=body.scene_version,
        seq=body.seq,
        received_at=received_at,
    )


_UPSERT_SPACE = """
INSERT INTO events_spaceoccupancy (site_id, device_id, camera, zone, occupied, since, event_id, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (site_id, device_id, camera, zone) DO UPDATE
SET occupied = excluded.occupied, since = excluded.since, event_id = excluded.event_id, updated_at = excluded.updated_at
WHERE events_spaceoccupancy.since < excluded.since
"""


def _apply_occupancy(events: list[Event]) -> None:
    """Move each space's state forward to its newest occupancy event; an older or repeated one changes nothing.

    One conditional upsert per event: two ingest workers racing on a space still end at the newest state.
    """
    states = [e for e in events if e.attributes.get("state") in ("occupied", "free")]
    if not states:
        return
    now = timezone.now()
    columns = ("site", "device", "camera", "zone", "occupied", "since", "event_id", "updated_at")
    fields = [SpaceOccupancy._meta.get_field(name) for name in columns]
    params = [
        tuple(
            field.get_db_prep_value(value, connection)
            for field, value in zip(
                fields,
                (
                    e.site_id,
                    e.device_id,
                    e.camera,
                    e.zone,
                    e.attributes["state"] == "occupied",
                    e.start,
                    e.event_id,
                    now,
                ),
                strict=True,
            )
        )
        for e in sorted(states, key=lambda e: e.start)
    ]
    with connection.cursor() as cursor:
        cursor.executemany(_UPSERT_SPACE, params)


# --- what the console and the API show about a park ---


def occupancy_summary(site: Site) -> dict:
    spaces = list(SpaceOccupancy.objects.filter(site=site).order_by("camera", "zone"))
    occupied = sum(space.occupied for space in spaces)
    return {"spaces": spaces, "total": len(spaces), "occupied": occupied, "free": len(spaces) - occupied}


def occupancy_series(site: Site, hours: float = 24.0, now: datetime | None = None) -> dict:
    """Occupied spaces over time: one point per change in the window, starting from the state at its start."""
    now = now or timezone.now()
    since = now - timedelta(hours=hours)
    occupancy = Event.objects.filter(site=site, rule=Rule.OCCUPANCY)
    state: dict[tuple, bool] = {}
    for e in occupancy.filter(start__lt=since).order_by("start").only("device", "camera", "zone", "attributes"):
        state[(e.device_id, e.camera, e.zone)] = e.attributes.get("state") == "occupied"
    points = [(since, sum(state.values()))]
    changes = occupancy.filter(start__gte=since, start__lte=now).order_by("start")
    for e in changes.only("device", "camera", "zone", "attributes", "start")[:20_000]:
        state[(e.device_id, e.camera, e.zone)] = e.attributes.get("state") == "occupied"
        points.append((e.start, sum(state.values())))
    points.append((now, sum(state.values())))
    return {"t": [t.isoformat() for t, _ in points], "occupied": [n for _, n in points]}


def recent_alerts(site: Site, limit: int = 20) -> list[Event]:
    """Open alerts first, then the most recent closed ones."""
    alerts = Event.objects.filter(site=site, rule__in=ALERT_RULES)
    open_alerts = list(alerts.filter(end__isnull=True).order_by("-start")[:limit])
    closed = list(alerts.filter(end__isnull=False).order_by("-start")[: max(0, limit - len(open_alerts))])
    return open_alerts + closed


def line_counts(site: Site, hours: float = 24.0) -> list[dict]:
    """Crossings per camera, line and direction over the last hours."""
    since = timezone.now() - timedelta(hours=hours)
    rows = (
        Event.objects.filter(site=site, rule=Rule.LINE_COUNT, start__gte=since)
        .values("camera", "zone", "attributes__direction")
        .annotate(count=Count("id"))
        .order_by("camera", "zone", "attributes__direction")
    )
    return [
        {"camera": r["camera"], "line": r["zone"], "direction": r["attributes__direction"], "count": r["count"]}
        for r in rows
    ]
