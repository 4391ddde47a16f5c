"""Smart-park events from the devices' cameras, and the occupancy of each parking space they imply."""

from django.db import models

from fleet_server.devices.models import Device, Site


class Rule(models.TextChoices):
    # The values of fleet_protocol's EventBody.rule (smartpark.events.Rule).
    OCCUPANCY = "occupancy"
    FIRE_LANE = "fire_lane", "fire lane"
    INTRUSION = "intrusion"
    LINE_COUNT = "line_count", "line count"
    OFF_DUTY = "off_duty", "off duty"
    INACTIVITY = "inactivity"


ALERT_RULES = (Rule.FIRE_LANE, Rule.INTRUSION, Rule.OFF_DUTY, Rule.INACTIVITY)


class Event(models.Model):
    """One event as the device reported it. Duration events (alerts) arrive twice under one event_id: open
    (end null) when confirmed, then with their end; ingest fills the end in and never clears it."""

    event_id = models.UUIDField(unique=True)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="events")
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="events")
    camera = models.CharField(max_length=64)
    zone = models.CharField(max_length=128)
    rule = models.CharField(max_length=16, choices=Rule.choices)
    start = models.DateTimeField()
    end = models.DateTimeField(null=True, blank=True)
    confidence = models.FloatField(default=1.0)
    attributes = models.JSONField(default=dict, blank=True)
    model = models.CharField(max_length=128, blank=True)
    model_version = models.PositiveIntegerField(default=0)
    scene_version = models.PositiveIntegerField(default=0)
    seq = models.BigIntegerField(help_text="The device's outbox number: increases by one per event on a device.")
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["-start", "-id"]
        indexes = [
            models.Index(fields=["site", "rule", "-start"], name="event_site_rule_start"),
            models.Index(fields=["device", "seq"], name="event_device_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.rule} {self.camera}/{self.zone} at {self.start:%Y-%m-%d %H:%M:%S}"

    @property
    def is_open(self) -> bool:
        return self.end is None and self.rule in ALERT_RULES


class SpaceOccupancy(models.Model):
    """The latest known state of one parking space (a camera's zone), moved only forward in time."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="spaces")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="spaces")
    camera = models.CharField(max_length=64)
    zone = models.CharField(max_length=128)
    occupied = models.BooleanField()
    since = models.DateTimeField(help_text="When the space became occupied or free (the event's start).")
    event_id = models.UUIDField(help_text="The event that set this state.")
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["camera", "zone"]
        constraints = [
            models.UniqueConstraint(fields=["site", "device", "camera", "zone"], name="space_occupancy_unique"),
        ]
        verbose_name_plural = "space occupancy"

    def __str__(self) -> str:
        return f"{self.camera}/{self.zone}: {'occupied' if self.occupied else 'free'}"
