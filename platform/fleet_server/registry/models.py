"""Models a tenant uploads, the compression jobs run on them and the packages those jobs produce.

Blobs (the uploaded checkpoint, the encrypted package) live in the content-addressed blob store
(``settings.BLOB_STORE_ROOT``); rows keep their sha256. A package's content key is stored sealed
(see ``fleet_server.registry.content_keys``), never in the clear.
"""

from django.core.validators import RegexValidator
from django.db import models

TASK_DETECTION = "detection"

sha256_validator = RegexValidator(r"^[0-9a-f]{64}$", "a sha256 is 64 lowercase hex digits")


class ModelTask(models.TextChoices):
    DETECTION = TASK_DETECTION, "Object detection"


class ModelFamily(models.Model):
    """A model a tenant maintains over time, e.g. "lot-detector"; its name goes into every package manifest."""

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.PROTECT, related_name="model_families")
    name = models.SlugField(max_length=100, help_text="Lowercase letters, digits, '-' and '_'; unique per tenant.")
    task = models.CharField(max_length=32, choices=ModelTask.choices, default=ModelTask.DETECTION)
    labels = models.JSONField(default=list, help_text='Class names in output order, e.g. ["vehicle", "person"].')
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model families"
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="model_family_unique_per_tenant")]

    def __str__(self) -> str:
        return self.name


class ModelKind(models.TextChoices):
    CHECKPOINT = "checkpoint", "Smart-park detector checkpoint (torch)"


class ModelVersion(models.Model):
    """One uploaded float model: numbered 1, 2, ... within its family, checked on upload."""

    family = models.ForeignKey(ModelFamily, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    kind = models.CharField(max_length=32, choices=ModelKind.choices, default=ModelKind.CHECKPOINT)
    blob_sha256 = models.CharField(max_length=64, validators=[sha256_validator])
    size_bytes = models.BigIntegerField()
    filename = models.CharField(max_length=255, blank=True)
    # (N, C, H, W) of the network input and how pixels become that input.
    input_shape = models.JSONField()
    input_spec = models.JSONField(default=dict)
    architecture = models.JSONField(default=dict)
    parameters = models.BigIntegerField()
    fp32_bytes = models.BigIntegerField()
    notes = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family__name", "-version"]
        constraints = [models.UniqueConstraint(fields=["family", "version"], name="model_version_unique_per_family")]

    def __str__(self) -> str:
        return f"{self.family.name} v{self.version}"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_JOB_STATES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class CompressionJob(models.Model):
    """Compression of one model version with a preset; a Celery worker runs it and streams its progress here."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="jobs")
    preset = models.CharField(max_length=32)
    config = models.JSONField(default=dict, help_text="The preset's settings after the caller's overrides.")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    phase = models.CharField(max_length=32, blank=True)
    step = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    # The task loss of every training step, in order (ADMM, fine-tuning and pruning phases together).
    loss_curve = models.JSONField(default=list, blank=True)
    log = models.JSONField(default=list, blank=True)
    report = models.JSONField(null=True, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host and pid of the process running it")
    celery_task_id = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return f"{self.preset} of {self.model_version} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_JOB_STATES

    @property
    def percent(self) -> float:
        if self.status == JobStatus.SUCCEEDED:
            return 100.0
        return 100.0 * self.step / self.total if self.total else 0.0


class Package(models.Model):
    """A signed model package, stored encrypted; ``version`` is monotonic per family (devices refuse going back)."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="packages")
    job = models.OneToOneField(CompressionJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="package")
    version = models.PositiveIntegerField()
    family = models.ForeignKey(ModelFamily, on_delete=models.PROTECT, related_name="packages")
    runtimes = models.JSONField(default=list)
    codebook = models.CharField(max_length=16)
    # The blob store holds the ciphertext; sha256/size are those of the ciphertext (what devices download).
    blob_sha256 = models.CharField(max_length=64, validators=[sha256_validator])
    size_bytes = models.BigIntegerField()
    plaintext_sha256 = models.CharField(max_length=64, validators=[sha256_validator])
    sealed_content_key = models.CharField(max_length=200, editable=False)
    signer_key_id = models.CharField(max_length=32)
    manifest = models.JSONField(default=dict)
    metric_name = models.CharField(max_length=32, blank=True)
    metric_before = models.FloatField(null=True, blank=True)
    metric_after = models.FloatField(null=True, blank=True)
    compression_ratio = models.FloatField()
    model_bytes = models.BigIntegerField(help_text="bytes of model.ir")
    fp32_bytes = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["family__name", "-version"]
        constraints = [models.UniqueConstraint(fields=["family", "version"], name="package_version_unique_per_family")]

    def __str__(self) -> str:
        return f"{self.family.name} package {self.version} ({self.codebook})"
