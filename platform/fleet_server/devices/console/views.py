"""Console pages of the device registry: the fleet list, a device, parks and enrollment tokens."""

from datetime import timedelta

from django.contrib import messages
from django.db.models import Count, Q
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views import View
from django.views.generic import CreateView, DetailView, ListView

from fleet_server.console.mixins import OperatorRequiredMixin, ViewerRequiredMixin
from fleet_server.devices import services
from fleet_server.devices.console.forms import ClaimTokenForm, CommandForm, SiteForm
from fleet_server.devices.filtersets import DeviceFilterSet
from fleet_server.devices.models import ClaimToken, Device, Site
from fleet_server.roles import can_operate


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


class FleetView(ViewerRequiredMixin, ListView):
    """All devices with filters; the table re-renders itself every few seconds (htmx polling)."""

    template_name = "devices/fleet.html"
    paginate_by = 100

    def get_queryset(self):
        queryset = Device.objects.select_related("site").prefetch_related("tags")
        self.filterset = DeviceFilterSet(self.request.GET or None, queryset=queryset)
        return self.filterset.qs if self.filterset.is_bound and self.filterset.is_valid() else queryset

    def get_template_names(self):
        return ["devices/_fleet_table.html"] if _is_htmx(self.request) else [self.template_name]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        counts = self.object_list.aggregate(total=Count("pk"), online=Count("pk", filter=Q(online=True)))
        counts["offline"] = counts["total"] - counts["online"]
        context.update(filterset=self.filterset, counts=counts, query=self.request.GET.urlencode())
        return context


class DeviceDetailView(ViewerRequiredMixin, DetailView):
    model = Device
    template_name = "devices/device_detail.html"
    context_object_name = "device"

    def get_queryset(self):
        return Device.objects.select_related("site").prefetch_related("tags", "cameras")

    def get_template_names(self):
        if _is_htmx(self.request) and self.request.GET.get("part") == "status":
            return ["devices/_device_status.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["command_form"] = CommandForm()
        context["commands"] = self.object.commands.all()[:10]
        return context


class DeviceTelemetryJson(ViewerRequiredMixin, View):
    """The last hour of telemetry as chart series (the device page polls it)."""

    def get(self, request, pk):
        device = get_object_or_404(Device, pk=pk)
        since = timezone.now() - timedelta(hours=1)
        samples = list(
            device.telemetry.filter(received_at__gte=since)
            .order_by("-received_at")
            .values("received_at", "cpu_percent", "memory_percent", "temperature_c", "disk_free_mb", "details")[:720]
        )[::-1]
        return JsonResponse(
            {
                "t": [s["received_at"].isoformat() for s in samples],
                "cpu_percent": [s["cpu_percent"] for s in samples],
                "memory_percent": [s["memory_percent"] for s in samples],
                "temperature_c": [s["temperature_c"] for s in samples],
                # The pipeline: frames/s per camera, runtime latency, queue depths (None where a sample lacks one).
                "camera_fps": _series(samples, "cameras", "camera", "fps"),
                "latency_p95_ms": _series(samples, "runtimes", "runtime", "latency_p95_ms"),
                "latency_p50_ms": _series(samples, "runtimes", "runtime", "latency_p50_ms"),
                "queues": _queue_series(samples),
                "latest": _latest(samples),
            }
        )


def _series(samples: list[dict], group: str, key: str, value: str) -> dict[str, list]:
    names = sorted({entry[key] for s in samples for entry in (s["details"] or {}).get(group, [])})
    series = {name: [] for name in names}
    for sample in samples:
        found = {entry[key]: entry.get(value) for entry in (sample["details"] or {}).get(group, [])}
        for name in names:
            series[name].append(found.get(name))
    return series


def _queue_series(samples: list[dict]) -> dict[str, list]:
    names = sorted({name for s in samples for name in (s["details"] or {}).get("queues", {})})
    return {name: [(s["details"] or {}).get("queues", {}).get(name) for s in samples] for name in names}


def _latest(samples: list[dict]) -> dict:
    """The newest sample's pipeline numbers, for the table beside the charts."""
    if not samples:
        return {}
    last = samples[-1]
    details = last["details"] or {}
    return {
        "disk_free_mb": last["disk_free_mb"],
        "cameras": details.get("cameras", []),
        "runtimes": details.get("runtimes", []),
        "queues": details.get("queues", {}),
    }


class DeviceCommandsView(ViewerRequiredMixin, View):
    """GET: the recent commands (polled); POST (operators): queue a command."""

    def get(self, request, pk):
        device = get_object_or_404(Device, pk=pk)
        return render(request, "devices/_commands.html", {"device": device, "commands": device.commands.all()[:10]})

    def post(self, request, pk):
        device = get_object_or_404(Device, pk=pk)
        form = CommandForm(request.POST)
        error = ""
        if not can_operate(request.user):
            error = "only operators may send commands"
        elif not form.is_valid():
            error = "; ".join(f"{field}: {', '.join(errs)}" for field, errs in form.errors.items())
        else:
            try:
                services.send_command(device, form.cleaned_data["name"], form.command_args(), created_by=request.user)
            except services.CommandError as exc:
                error = str(exc)
        context = {"device": device, "commands": device.commands.all()[:10], "error": error}
        return render(request, "devices/_commands.html", context, status=422 if error else 200)


class SiteListView(ViewerRequiredMixin, ListView):
    template_name = "devices/sites.html"
    context_object_name = "sites"

    def get_queryset(self):
        return (
            Site.objects.select_related("tenant")
            .annotate(
                device_count=Count("devices", distinct=True),
                online_count=Count("devices", filter=Q(devices__online=True), distinct=True),
            )
            .order_by("name")
        )


class SiteCreateView(OperatorRequiredMixin, CreateView):
    form_class = SiteForm
    template_name = "devices/site_form.html"

    def get_success_url(self):
        messages.success(self.request, f"Park “{self.object}” created.")
        return reverse("console:sites")


class ClaimTokenView(OperatorRequiredMixin, View):
    """Create a one-time claim token and show it once, with the command the installer runs."""

    template_name = "devices/claim_tokens.html"

    def _render(self, request, form, token=None, claim=None):
        recent = ClaimToken.objects.select_related("site", "device")[:20]
        context = {
            "form": form,
            "token": token,
            "claim": claim,
            "recent": recent,
            "now": timezone.now(),
            "server_url": request.build_absolute_uri("/").rstrip("/"),
        }
        return render(request, self.template_name, context)

    def get(self, request):
        if not Site.objects.exists():
            messages.info(request, "Create a park first: devices are enrolled into a park.")
            return redirect("console:site-create")
        return self._render(request, ClaimTokenForm())

    def post(self, request):
        form = ClaimTokenForm(request.POST)
        if not form.is_valid():
            return self._render(request, form)
        claim, token = services.create_claim_token(
            form.cleaned_data["site"],
            created_by=request.user,
            ttl=timedelta(hours=form.cleaned_data["hours"]),
            note=form.cleaned_data["note"],
        )
        return self._render(request, ClaimTokenForm(), token=token, claim=claim)
