from django.db import transaction
from rest_framework import serializers

from fleet_server.devices.models import (
    Camera,
    ClaimToken,
    Command,
    Device,
    DeviceKind,
    Site,
    Tag,
    TelemetrySample,
)
from fleet_server.tenants.models import Tenant


class SiteSerializer(serializers.ModelSerializer):
    tenant = serializers.SlugRelatedField(slug_field="slug", queryset=Tenant.objects.all())
    device_count = serializers.IntegerField(read_only=True)
    online_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Site
        fields = [
            "id",
            "name",
            "slug",
            "tenant",
            "time_zone",
            "address",
            "device_count",
            "online_count",
            "created_at",
        ]


class CameraSerializer(serializers.ModelSerializer):
    class Meta:
        model = Camera
        fields = ["camera_id", "name"]


class TagNamesField(serializers.ListField):
    """Tags as a list of names; writing unknown names creates them."""

    child = serializers.SlugField(max_length=50)

    def to_representation(self, value):
        return [tag.name for tag in value.all()]


class DeviceSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="slug", queryset=Site.objects.all())
    tags = TagNamesField(required=False, help_text="Tag names; unknown ones are created.")
    cameras = CameraSerializer(many=True, read_only=True)

    class Meta:
        model = Device
        fields = [
            "id",
            "name",
            "kind",
            "site",
            "tags",
            "online",
            "last_seen_at",
            "status_changed_at",
            "agent_version",
            "runtimes",
            "model_slots",
            "update_state",
            "scene_version",
            "hardware_info",
            "cameras",
            "telemetry_interval_s",
            "keepalive_s",
            "enrolled_at",
        ]
        # All but what an operator edits is the device's own report.
        read_only_fields = [name for name in fields if name not in ("name", "site", "tags")]

    def update(self, instance, validated_data):
        tag_names = validated_data.pop("tags", None)
        with transaction.atomic():
            instance = super().update(instance, validated_data)
            if tag_names is not None:
                tags = [Tag.objects.get_or_create(name=name)[0] for name in dict.fromkeys(tag_names)]
                instance.tags.set(tags)
        return instance


class TelemetrySampleSerializer(serializers.ModelSerializer):
    class Meta:
        model = TelemetrySample
        fields = [
            "received_at",
            "reported_at",
            "cpu_percent",
            "memory_percent",
            "memory_used_mb",
            "load_1m",
            "temperature_c",
            "disk_free_mb",
            "details",
        ]


class CommandSerializer(serializers.ModelSerializer):
    class Meta:
        model = Command
        fields = [
            "id",
            "name",
            "args",
            "state",
            "progress",
            "reason",
            "created_at",
            "updated_at",
            "expires_at",
        ]
        read_only_fields = ["id", "state", "progress", "reason", "created_at", "updated_at", "expires_at"]


class CommandRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64, help_text="ping | set_telemetry_interval")
    args = serializers.DictField(required=False, default=dict, help_text='e.g. {"interval_s": 30}')
    ttl_s = serializers.IntegerField(required=False, min_value=10, max_value=30 * 24 * 3600)


class ClaimTokenSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="slug", queryset=Site.objects.all())
    hours = serializers.FloatField(write_only=True, required=False, min_value=0.01, max_value=24 * 365)
    token = serializers.CharField(read_only=True, help_text="Shown once, at creation.")

    class Meta:
        model = ClaimToken
        fields = ["id", "site", "note", "hours", "token", "created_at", "expires_at", "used_at", "device"]
        read_only_fields = ["id", "created_at", "expires_at", "used_at", "device"]


class EnrollCameraSerializer(serializers.Serializer):
    camera_id = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)


class EnrollRequestSerializer(serializers.Serializer):
    token = serializers.CharField(max_length=200)
    name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    kind = serializers.ChoiceField(choices=DeviceKind.choices)
    public_key = serializers.CharField(max_length=64, help_text="X25519 public key, raw 32 bytes, base64")
    agent_version = serializers.CharField(max_length=64, required=False, default="")
    hardware = serializers.DictField(required=False, default=dict)
    cameras = EnrollCameraSerializer(many=True, required=False, default=list)

    def validate_cameras(self, value):
        ids = [camera["camera_id"] for camera in value]
        if len(ids) != len(set(ids)):
            raise serializers.ValidationError("camera ids must be unique")
        if len(ids) > 64:
            raise serializers.ValidationError("at most 64 cameras per device")
        return value

    def validate_hardware(self, value):
        if len(str(value)) > 4096:
            raise serializers.ValidationError("hardware info is limited to 4 KiB")
        return value


class MqttCredentialsSerializer(serializers.Serializer):
    url = serializers.CharField()
    username = serializers.CharField()
    password = serializers.CharField()
    client_id = serializers.CharField()
    keepalive_s = serializers.IntegerField()


class EnrollResponseSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    name = serializers.CharField()
    site = serializers.CharField()
    mqtt = MqttCredentialsSerializer()
    telemetry_interval_s = serializers.FloatField()
    signing_keys = serializers.DictField(
        child=serializers.CharField(),
        help_text="The package-signing public keys to pin: {key_id: base64 raw Ed25519 public key}.",
    )
