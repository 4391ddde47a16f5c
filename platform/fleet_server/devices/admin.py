from django.contrib import admin

from fleet_server.devices.models import Camera, ClaimToken, Command, Device, Site, Tag


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "tenant", "time_zone"]
    list_filter = ["tenant"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


class CameraInline(admin.TabularInline):
    model = Camera
    extra = 0


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "site", "online", "last_seen_at", "agent_version"]
    list_filter = ["online", "kind", "site"]
    search_fields = ["name", "id"]
    readonly_fields = [
        "id",
        "public_key",
        "mqtt_username",
        "mqtt_password_hash",
        "enrolled_at",
        "last_seen_at",
        "status_changed_at",
        "heartbeat_deadline",
        "hardware_info",
        "runtimes",
    ]
    filter_horizontal = ["tags"]
    inlines = [CameraInline]


@admin.register(ClaimToken)
class ClaimTokenAdmin(admin.ModelAdmin):
    list_display = ["site", "note", "created_at", "expires_at", "used_at", "device"]
    readonly_fields = ["token_hash", "used_at", "device"]

    def has_add_permission(self, request) -> bool:
        # The plaintext token is shown once, by the console page or `manage.py create_claim_token`.
        return False


@admin.register(Command)
class CommandAdmin(admin.ModelAdmin):
    list_display = ["name", "device", "state", "created_at", "updated_at"]
    list_filter = ["state", "name"]
