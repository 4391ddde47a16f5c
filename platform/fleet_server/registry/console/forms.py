import json

from django import forms

from fleet_server.registry import checkpoints, presets, services
from fleet_server.registry.models import ModelFamily
from fleet_server.tenants.models import Tenant


class FamilyForm(forms.Form):
    tenant = forms.ModelChoiceField(queryset=Tenant.objects.all(), help_text="The business unit that owns the model.")
    name = forms.SlugField(max_length=100, help_text="Lowercase letters, digits and '-', e.g. lot-detector.")
    labels = forms.CharField(
        max_length=2000,
        initial="vehicle, person",
        help_text="Class names in the model's output order, comma-separated.",
    )
    description = forms.CharField(required=False, max_length=500)

    def clean_labels(self):
        labels = [label.strip() for label in self.cleaned_data["labels"].split(",")]
        try:
            return services.check_labels(labels)
        except services.RegistryError as error:
            raise forms.ValidationError(str(error)) from None

    def clean(self):
        data = super().clean()
        if ModelFamily.objects.filter(tenant=data.get("tenant"), name=data.get("name")).exists():
            self.add_error("name", f"{data['tenant']} already has a family named {data['name']!r}")
        return data


class UploadForm(forms.Form):
    family = forms.ModelChoiceField(queryset=ModelFamily.objects.select_related("tenant"))
    file = forms.FileField(help_text="A smart-park detector checkpoint (.pt).")
    input_shape = forms.CharField(initial="1,3,240,320", help_text="N,C,H,W of the network input.")
    notes = forms.CharField(required=False, max_length=500)

    def clean_input_shape(self):
        text = self.cleaned_data["input_shape"]
        try:
            return checkpoints.check_input_shape(part.strip() for part in text.replace("x", ",").split(","))
        except checkpoints.CheckpointError as error:
            raise forms.ValidationError(str(error)) from None


class CompressForm(forms.Form):
    preset = forms.ChoiceField(choices=presets.PRESET_CHOICES, widget=forms.RadioSelect, initial="int8")
    steps = forms.IntegerField(
        required=False, min_value=1, max_value=20_000, help_text="Training steps (3-bit presets); empty: the preset's."
    )
    config = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text='Advanced: overrides as JSON, e.g. {"calibration_frames": 64}.',
    )

    def clean(self):
        data = super().clean()
        preset = data.get("preset")
        if not preset:
            return data
        try:
            overrides = json.loads(data.get("config") or "{}")
        except json.JSONDecodeError as error:
            self.add_error("config", f"not valid JSON: {error}")
            return data
        if not isinstance(overrides, dict):
            self.add_error("config", "give a JSON object of setting names and values")
            return data
        try:
            if data.get("steps"):
                overrides = {**presets.scaled_steps(preset, data["steps"]), **overrides}
            data["overrides"] = overrides
            presets.resolve_config(preset, overrides)
        except presets.PresetError as error:
            self.add_error("steps" if "trains nothing" in str(error) else "config", str(error))
        return data
