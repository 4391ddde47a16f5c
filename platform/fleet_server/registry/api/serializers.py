from django.urls import reverse
from rest_framework import serializers

from fleet_server.registry import checkpoints, services
from fleet_server.registry.models import CompressionJob, ModelFamily, ModelVersion, Package
from fleet_server.registry.presets import PRESET_CHOICES
from fleet_server.tenants.models import Tenant


class ModelFamilySerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", queryset=Tenant.objects.all())
    labels = serializers.ListField(child=serializers.CharField(max_length=services.MAX_LABEL_LENGTH), min_length=1)
    version_count = serializers.IntegerField(read_only=True)
    package_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = ModelFamily
        fields = [
            *("id", "tenant", "name", "task", "labels", "description"),
            *("version_count", "package_count", "created_at"),
        ]
        # The pair is checked in validate() with a message that says what to do.
        validators: list = []

    def validate_labels(self, value):
        try:
            return services.check_labels(value)
        except services.RegistryError as error:
            raise serializers.ValidationError(str(error)) from None

    def validate(self, attrs):
        if self.instance is not None:
            # Packages carry the name, task and labels: changing them would change what old packages mean.
            for field in ("tenant", "name", "task", "labels"):
                if field in attrs and attrs[field] != getattr(self.instance, field):
                    raise serializers.ValidationError({field: "cannot change once created; create a new family"})
            return attrs
        if ModelFamily.objects.filter(tenant=attrs["tenant"], name=attrs["name"]).exists():
            message = f"{attrs['tenant']} already has a family named {attrs['name']!r}"
            raise serializers.ValidationError({"name": message})
        return attrs


class ModelVersionSerializer(serializers.ModelSerializer):
    family_name = serializers.CharField(source="family.name", read_only=True)
    # Plain text in the schema: an enum would collide with the devices' "kind" enum.
    kind = serializers.CharField(read_only=True, help_text="checkpoint: a smart-park detector checkpoint")
    created_by = serializers.StringRelatedField()

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "family",
            "family_name",
            "version",
            "kind",
            "blob_sha256",
            "size_bytes",
            "filename",
            "input_shape",
            "input_spec",
            "architecture",
            "parameters",
            "fp32_bytes",
            "notes",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields


class InputShapeField(serializers.CharField):
    """(1, 3, H, W) as "1,3,240,320" (multipart forms carry text)."""

    def to_internal_value(self, data):
        text = super().to_internal_value(data)
        try:
            return checkpoints.check_input_shape(part.strip() for part in text.replace("x", ",").split(","))
        except checkpoints.CheckpointError as error:
            raise serializers.ValidationError(str(error)) from None


class ModelVersionUploadSerializer(serializers.Serializer):
    family = serializers.PrimaryKeyRelatedField(queryset=ModelFamily.objects.all())
    file = serializers.FileField(help_text="A smart-park detector checkpoint (smartpark.detector.save_checkpoint).")
    input_shape = InputShapeField(required=False, help_text="N,C,H,W of the network input (default 1,3,240,320)")
    notes = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class CompressionJobSummarySerializer(serializers.ModelSerializer):
    family = serializers.CharField(source="model_version.family.name", read_only=True)
    percent = serializers.FloatField(read_only=True)
    package = serializers.SerializerMethodField(help_text="Id of the package the job built, once it succeeded.")

    class Meta:
        model = CompressionJob
        fields = [
            "id",
            "model_version",
            "family",
            "preset",
            "status",
            "phase",
            "step",
            "total",
            "percent",
            "error",
            "cancel_requested",
            "package",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_package(self, job) -> int | None:
        try:
            return job.package.pk
        except Package.DoesNotExist:
            return None


class CompressionJobSerializer(CompressionJobSummarySerializer):
    class Meta(CompressionJobSummarySerializer.Meta):
        fields = [
            *CompressionJobSummarySerializer.Meta.fields,
            "config",
            "loss_curve",
            "log",
            "report",
            "timings",
            "heartbeat_at",
            "worker",
        ]
        read_only_fields = fields


class CompressionJobRequestSerializer(serializers.Serializer):
    model_version = serializers.PrimaryKeyRelatedField(queryset=ModelVersion.objects.all())
    preset = serializers.ChoiceField(choices=PRESET_CHOICES)
    config = serializers.DictField(
        required=False, default=dict, help_text='Overrides of the preset\'s settings, e.g. {"admm_steps": 50}.'
    )


class PackageSerializer(serializers.ModelSerializer):
    family_name = serializers.CharField(source="family.name", read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = Package
        fields = [
            "id",
            "family",
            "family_name",
            "version",
            "model_version",
            "job",
            "codebook",
            "runtimes",
            "blob_sha256",
            "size_bytes",
            "plaintext_sha256",
            "signer_key_id",
            "manifest",
            "metric_name",
            "metric_before",
            "metric_after",
            "compression_ratio",
            "model_bytes",
            "fp32_bytes",
            "created_at",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, package) -> str:
        path = reverse("package-download", args=[package.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class SigningKeysSerializer(serializers.Serializer):
    active = serializers.CharField(help_text="Id of the key that signs new packages.")
    keys = serializers.DictField(child=serializers.CharField(), help_text="Key id -> raw Ed25519 public key, base64.")
