"""A deployment: one package sent to chosen devices, one deploy command per device.

Each target's state, progress and reason are its command's, which the devices' acks update.
"""

from django.db import models

from fleet_server.devices.models import FINAL_COMMAND_STATES, CommandState

SUCCEEDED_STATES = frozenset({CommandState.HEALTHY, CommandState.DONE})


class Deployment(models.Model):
    package = models.ForeignKey("registry.Package", on_delete=models.PROTECT, related_name="deployments")
    name = models.CharField(max_length=200, blank=True)
    note = models.CharField(max_length=500, blank=True)
    scene_configs = models.JSONField(default=list, blank=True, help_text="SceneConfig.to_dict() per camera.")
    observe_s = models.FloatField(null=True, blank=True, help_text="Seconds the device observes before it commits.")
    created_by = models.ForeignKey("auth.User", null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return self.name or f"deployment {self.pk}"

    def summary(self) -> dict:
        """Targets per state, how many finished, succeeded and failed, and the percent finished."""
        states = [target.command.state for target in self.targets.all()]
        counts = {state: states.count(state) for state in dict.fromkeys(states)}
        total = len(states)
        final = sum(1 for state in states if state in FINAL_COMMAND_STATES)
        succeeded = sum(1 for state in states if state in SUCCEEDED_STATES)
        return {
            "total": total,
            "states": counts,
            "final": final,
            "succeeded": succeeded,
            "failed": final - succeeded,
            "percent_done": round(100.0 * final / total, 1) if total else 100.0,
            "is_final": final == total,
        }


class DeploymentTarget(models.Model):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="targets")
    device = models.ForeignKey("devices.Device", on_delete=models.CASCADE, related_name="deployment_targets")
    command = models.OneToOneField("devices.Command", on_delete=models.CASCADE, related_name="deployment_target")
    # The last rollback sent to this device from this deployment (its own command, with its own acks).
    rollback_command = models.OneToOneField(
        "devices.Command", null=True, blank=True, on_delete=models.SET_NULL, related_name="rolled_back_target"
    )

    class Meta:
        ordering = ["device__name", "pk"]
        constraints = [models.UniqueConstraint(fields=["deployment", "device"], name="deployment_target_unique_device")]

    def __str__(self) -> str:
        return f"{self.deployment} → {self.device}"

    @property
    def state(self) -> str:
        return self.command.state

    @property
    def progress(self) -> float | None:
        return self.command.progress

    @property
    def reason(self) -> str:
        return self.command.reason

    @property
    def is_final(self) -> bool:
        return self.command.is_final
