from fleet_server.api.viewsets import TenantScopedReadOnlyViewSet
from fleet_server.events.api import serializers
from fleet_server.events.filtersets import EventFilterSet, SpaceOccupancyFilterSet
from fleet_server.events.models import Event, SpaceOccupancy


class EventViewSet(TenantScopedReadOnlyViewSet):
    """Smart-park events, newest first; alerts have an end once they are over."""

    queryset = Event.objects.select_related("site")
    serializer_class = serializers.EventSerializer
    filterset_class = EventFilterSet
    ordering_fields = ["start", "received_at", "seq"]
    lookup_field = "event_id"
    tenant_field = "site__tenant"


class SpaceOccupancyViewSet(TenantScopedReadOnlyViewSet):
    """The current state of every parking space, per park."""

    queryset = SpaceOccupancy.objects.select_related("site").order_by("site__slug", "camera", "zone")
    serializer_class = serializers.SpaceOccupancySerializer
    filterset_class = SpaceOccupancyFilterSet
    tenant_field = "site__tenant"
