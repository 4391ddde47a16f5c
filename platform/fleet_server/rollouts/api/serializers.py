from rest_framework import serializers

from fleet_server.rollouts.models import Deployment, DeploymentTarget


class DeploymentTargetSerializer(serializers.ModelSerializer):
    device = serializers.CharField(source="device_id", read_only=True)
    device_name = serializers.CharField(source="device.name", read_only=True)
    command = serializers.UUIDField(source="command_id", read_only=True)
    state = serializers.CharField(read_only=True)
    progress = serializers.FloatField(read_only=True, allow_null=True)
    reason = serializers.CharField(read_only=True)
    updated_at = serializers.DateTimeField(source="command.updated_at", read_only=True)
    rollback_command = serializers.UUIDField(source="rollback_command_id", read_only=True, allow_null=True)

    class Meta:
        model = DeploymentTarget
        fields = [
            "device",
            "device_name",
            "command",
            "state",
            "progress",
            "reason",
            "updated_at",
            "rollback_command",
        ]


class DeploymentSummarySerializer(serializers.Serializer):
    total = serializers.IntegerField()
    states = serializers.DictField(child=serializers.IntegerField(), help_text="targets per command state")
    final = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    failed = serializers.IntegerField()
    percent_done = serializers.FloatField()
    is_final = serializers.BooleanField()


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="package.family.name", read_only=True)
    version = serializers.IntegerField(source="package.version", read_only=True)
    created_by = serializers.StringRelatedField(read_only=True)
    summary = DeploymentSummarySerializer(read_only=True)
    targets = DeploymentTargetSerializer(many=True, read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "name",
            "note",
            "package",
            "model",
            "version",
            "scene_configs",
            "observe_s",
            "created_by",
            "created_at",
            "summary",
            "targets",
        ]


class DeploymentRequestSerializer(serializers.Serializer):
    package = serializers.IntegerField(help_text="Package id.")
    devices = serializers.ListField(
        child=serializers.CharField(max_length=64), min_length=1, max_length=10000, help_text="Device ids."
    )
    scene_configs = serializers.ListField(
        child=serializers.DictField(), required=False, default=list, help_text="SceneConfig.to_dict() per camera."
    )
    observe_s = serializers.FloatField(required=False, allow_null=True, default=None, min_value=0, max_value=86400)
    name = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    note = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class RollbackRequestSerializer(serializers.Serializer):
    devices = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        max_length=10000,
        help_text="Device ids (for a deployment: default all its targets).",
    )
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class RollbackCommandSerializer(serializers.Serializer):
    device = serializers.CharField(source="device_id")
    command = serializers.UUIDField(source="pk")
    state = serializers.CharField()
