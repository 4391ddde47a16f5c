import json

from django import forms

from fleet_server.devices.models import Device
from fleet_server.registry.models import Package
from fleet_server.rollouts import services


class PackageChoiceForm(forms.Form):
    package = forms.ModelChoiceField(
        queryset=Package.objects.select_related("family__tenant").order_by("family__name", "-version"),
        help_text="The signed, encrypted package to send.",
    )


class DeployForm(forms.Form):
    """Devices (checkboxes) of the package's tenant, plus optional scene configs and observation time."""

    devices = forms.ModelMultipleChoiceField(
        queryset=Device.objects.none(), widget=forms.CheckboxSelectMultiple, help_text="Devices to deploy to."
    )
    observe_s = forms.FloatField(
        required=False, min_value=0, max_value=services.MAX_OBSERVE_S, label="Observe (s)",
        help_text="How long the device watches the new model before it commits (empty: the agent's default).",
    )  # fmt: skip
    scene_configs = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Optional: a JSON list of scene configs (one per camera) installed with the model.",
    )
    note = forms.CharField(required=False, max_length=500)

    def __init__(self, *args, package: Package, **kwargs):
        super().__init__(*args, **kwargs)
        self.package = package
        self.fields["devices"].queryset = (
            Device.objects.filter(site__tenant=package.family.tenant_id, revoked_at__isnull=True)
            .select_related("site")
            .prefetch_related("cameras")
            .order_by("site__name", "name")
        )

    def clean_scene_configs(self):
        text = self.cleaned_data["scene_configs"].strip()
        if not text:
            return []
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"not JSON: {exc}") from None
        try:
            return services.check_scene_configs(raw)
        except services.DeploymentError as exc:
            raise forms.ValidationError(str(exc)) from None


class RollbackForm(forms.Form):
    reason = forms.CharField(required=False, max_length=500)
