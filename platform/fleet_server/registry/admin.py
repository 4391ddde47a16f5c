from django.contrib import admin

from fleet_server.registry.models import CompressionJob, ModelFamily, ModelVersion, Package


@admin.register(ModelFamily)
class ModelFamilyAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "task", "created_at"]
    list_filter = ["tenant", "task"]
    search_fields = ["name"]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows made by checked uploads and jobs: the console, API and commands create them, never a bare form."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(ReadOnlyAdmin):
    list_display = ["family", "version", "kind", "parameters", "size_bytes", "created_at", "created_by"]
    list_filter = ["family__tenant", "kind"]
    search_fields = ["family__name", "blob_sha256"]


@admin.register(CompressionJob)
class CompressionJobAdmin(ReadOnlyAdmin):
    list_display = ["id", "model_version", "preset", "status", "phase", "step", "total", "created_at", "finished_at"]
    list_filter = ["status", "preset"]


@admin.register(Package)
class PackageAdmin(ReadOnlyAdmin):
    list_display = ["family", "version", "codebook", "compression_ratio", "size_bytes", "signer_key_id", "created_at"]
    list_filter = ["family__tenant", "codebook"]
    exclude = ["sealed_content_key"]
