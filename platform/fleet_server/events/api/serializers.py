from rest_framework import serializers

from fleet_server.events.models import Event, SpaceOccupancy


class EventSerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Event
        fields = ["event_id", "rule", "site", "device", "camera", "zone", "start", "end", "confidence", "attributes",
                  "model", "model_version", "scene_version", "seq", "received_at"]  # fmt: skip
        read_only_fields = fields


class SpaceOccupancySerializer(serializers.ModelSerializer):
    site = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = SpaceOccupancy
        fields = ["site", "device", "camera", "zone", "occupied", "since", "event_id", "updated_at"]
        read_only_fields = fields
