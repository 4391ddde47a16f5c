"""Parks, the devices in them, how devices enroll, what they report and what they are told to do."""

import uuid
import zoneinfo

from django.core.exceptions import ValidationError
from django.db import models


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not an IANA time zone (e.g. 'Europe/Berlin', 'Asia/Shanghai').")


class Site(models.Model):
    """A park: the unit a business unit owns and an operator manages."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="sites")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone])
    address = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.SlugField(max_length=50, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class DeviceKind(models.TextChoices):
    SMART_BOX_FPGA = "smart_box_fpga", "Smart box (FPGA)"
    SMART_BOX_CPU = "smart_box_cpu", "Smart box (CPU)"
    INTEGRATED_CAMERA = "integrated_camera", "Integrated camera"


def new_device_id() -> str:
    return str(uuid.uuid4())


class Device(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_device_id, editable=False)
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=32, choices=DeviceKind.choices)
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="devices")
    tags = models.ManyToManyField(Tag, blank=True, related_name="devices")
    hardware_info = models.JSONField(default=dict, blank=True)
    agent_version = models.CharField(max_length=64, blank=True)
    runtimes = models.JSONField(default=list, blank=True)
    # From the status: the model slots (slot, model, version, active), the update machine's state and zones.
    model_slots = models.JSONField(default=list, blank=True)
    update_state = models.CharField(max_length=32, blank=True)
    scene_version = models.PositiveIntegerField(default=0)

    # Presence: online/offline from the retained status topic (and its Last Will); last_seen_at from
    # any message; heartbeat_deadline is when the offline sweep gives up on a silent device.
    online = models.BooleanField(default=False)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    heartbeat_deadline = models.DateTimeField(null=True, blank=True, db_index=True)
    keepalive_s = models.PositiveIntegerField(default=30)
    telemetry_interval_s = models.FloatField(default=10.0)

    # Identity: the device's own X25519 public key (raw 32 bytes, base64) and its broker login.
    public_key = models.CharField(max_length=64)
    mqtt_username = models.CharField(max_length=100, unique=True)
    mqtt_password_hash = models.CharField(max_length=200)
    enrolled_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["site__name", "name"]
        indexes = [models.Index(fields=["online", "kind"])]

    def __str__(self) -> str:
        return self.name


class Camera(models.Model):
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="cameras")
    camera_id = models.SlugField(max_length=64, help_text="The id the agent uses for this camera.")
    name = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["camera_id"]
        constraints = [models.UniqueConstraint(fields=["device", "camera_id"], name="camera_unique_per_device")]

    def __str__(self) -> str:
        return f"{self.device}/{self.camera_id}"


class ClaimToken(models.Model):
    """A one-time secret an operator hands to a device installer; only its SHA-256 is stored."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="claim_tokens")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    note = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    device = models.OneToOneField(Device, null=True, blank=True, on_delete=models.SET_NULL, related_name="claim")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"claim token for {self.site} ({self.created_at:%Y-%m-%d %H:%M})"


class TelemetrySample(models.Model):
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="telemetry")
    received_at = models.DateTimeField()
    reported_at = models.DateTimeField()
    cpu_percent = models.FloatField()
    memory_percent = models.FloatField()
    memory_used_mb = models.FloatField(default=0)
    load_1m = models.FloatField(default=0)
    temperature_c = models.FloatField(null=True, blank=True)
    disk_free_mb = models.FloatField(null=True, blank=True)
    # Per camera fps, per runtime latency, queue depths: shapes that grow with later capabilities.
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["device", "-received_at"]), models.Index(fields=["received_at"])]

    def __str__(self) -> str:
        return f"{self.device_id} at {self.received_at:%Y-%m-%d %H:%M:%S}"


class CommandState(models.TextChoices):
    QUEUED = "queued", "Queued"  # saved; its MQTT message waits in the outbox
    SENT = "sent", "Sent"  # the broker accepted it
    RECEIVED = "received", "Received"
    DOWNLOADING = "downloading", "Downloading"
    VERIFYING = "verifying", "Verifying"
    INSTALLED = "installed", "Installed"
    HEALTHY = "healthy", "Healthy"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    ROLLED_BACK = "rolled_back", "Rolled back"
    EXPIRED = "expired", "Expired"  # no final answer before its deadline


FINAL_COMMAND_STATES = frozenset(
    {
        CommandState.HEALTHY,
        CommandState.DONE,
        CommandState.FAILED,
        CommandState.ROLLED_BACK,
        CommandState.EXPIRED,
    }
)


class Command(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="commands")
    name = models.CharField(max_length=64)
    args = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=16, choices=CommandState.choices, default=CommandState.QUEUED)
    progress = models.FloatField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["state", "expires_at"])]

    def __str__(self) -> str:
        return f"{self.name} → {self.device} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_COMMAND_STATES
