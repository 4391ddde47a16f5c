from django.contrib import admin

from fleet_server.rollouts.models import Deployment, DeploymentTarget


class DeploymentTargetInline(admin.TabularInline):
    model = DeploymentTarget
    fields = ["device", "command", "rollback_command"]
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = ["__str__", "package", "created_by", "created_at"]
    list_filter = ["package__family__tenant"]
    readonly_fields = ["package", "scene_configs", "observe_s", "created_by", "created_at"]
    inlines = [DeploymentTargetInline]
