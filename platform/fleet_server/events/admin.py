from django.contrib import admin

from fleet_server.events.models import Event, SpaceOccupancy


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    """Read-only: events are the devices' record, changed only by ingest."""

    list_display = ["rule", "site", "camera", "zone", "start", "end", "confidence", "device"]
    list_filter = ["rule", "site"]
    search_fields = ["event_id", "camera", "zone", "device__id"]
    date_hierarchy = "start"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(SpaceOccupancy)
class SpaceOccupancyAdmin(admin.ModelAdmin):
    list_display = ["site", "camera", "zone", "occupied", "since", "device"]
    list_filter = ["site", "occupied"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
