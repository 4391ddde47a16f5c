from django import forms

from fleet_server.devices.models import Site


class ClaimTokenForm(forms.Form):
    site = forms.ModelChoiceField(queryset=Site.objects.all(), help_text="The park the device will belong to.")
    hours = forms.FloatField(
        initial=24, min_value=0.1, max_value=24 * 30, help_text="How long the token stays valid (hours)."
    )
    note = forms.CharField(required=False, max_length=200, help_text="For the audit trail, e.g. the installer.")


class SiteForm(forms.ModelForm):
    class Meta:
        model = Site
        fields = ["tenant", "name", "slug", "time_zone", "address"]


class CommandForm(forms.Form):
    name = forms.ChoiceField(choices=[("ping", "Ping"), ("set_telemetry_interval", "Set telemetry interval")])
    interval_s = forms.FloatField(required=False, min_value=1, max_value=3600)

    def command_args(self) -> dict:
        if self.cleaned_data["name"] == "set_telemetry_interval":
            return {"interval_s": self.cleaned_data["interval_s"]}
        return {}

    def clean(self):
        data = super().clean()
        if data.get("name") == "set_telemetry_interval" and not data.get("interval_s"):
            self.add_error("interval_s", "give the new interval in seconds")
        return data
