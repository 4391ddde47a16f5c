"""Console pages of the model registry: models and uploads, a version and its jobs, live job progress, reports."""

from django.conf import settings
from django.contrib import messages
from django.db.models import Count, Max
from django.http import JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.generic import DetailView

from fleet_server.console.mixins import OperatorRequiredMixin, ViewerRequiredMixin
from fleet_server.registry import checkpoints, services
from fleet_server.registry.console.forms import CompressForm, FamilyForm, UploadForm
from fleet_server.registry.models import CompressionJob, ModelFamily, ModelVersion, Package
from fleet_server.registry.presets import PRESETS
from fleet_server.registry.uploads import SizeLimitedUploadHandler
from fleet_server.roles import can_operate


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _families():
    return (
        ModelFamily.objects.select_related("tenant")
        .annotate(
            version_count=Count("versions", distinct=True),
            package_count=Count("packages", distinct=True),
            latest_version=Max("versions__version"),
        )
        .order_by("tenant__name", "name")
    )


def _model_list(request, *, family_form=None, upload_form=None, status=200):
    context = {
        "families": _families(),
        "family_form": family_form or FamilyForm(),
        "upload_form": upload_form or UploadForm(initial={"family": request.GET.get("family")}),
        "max_upload_mb": settings.MODEL_UPLOAD_MAX_BYTES / 1e6,
    }
    return render(request, "registry/models.html", context, status=status)


class ModelListView(ViewerRequiredMixin, View):
    """Every model family with its versions and packages; operators create families and upload versions here."""

    def get(self, request):
        return _model_list(request)


class FamilyCreateView(OperatorRequiredMixin, View):
    def post(self, request):
        form = FamilyForm(request.POST)
        if not form.is_valid():
            return _model_list(request, family_form=form, status=422)
        data = form.cleaned_data
        family = services.create_family(data["tenant"], data["name"], data["labels"], description=data["description"])
        messages.success(request, f"Model family “{family.name}” created: upload its first version.")
        return redirect(f"{reverse('registry:models')}?family={family.pk}#upload")


@method_decorator(csrf_exempt, name="dispatch")
class VersionUploadView(OperatorRequiredMixin, View):
    """Upload a checkpoint; it streams through the size-limited handler and is checked before it is stored."""

    def dispatch(self, request, *args, **kwargs):
        # The CSRF check reads the form, so the handler must be in place before it runs (Django's documented
        # pattern for per-view upload handlers: exempt the outer view, protect the inner one).
        self.upload_limit = SizeLimitedUploadHandler(request, max_bytes=settings.MODEL_UPLOAD_MAX_BYTES)
        request.upload_handlers = [self.upload_limit]
        return csrf_protect(super().dispatch)(request, *args, **kwargs)

    def post(self, request):
        form = UploadForm(request.POST, request.FILES)
        if self.upload_limit.refused:
            form.is_valid()
            form.add_error("file", self.upload_limit.refused)
            return _model_list(request, upload_form=form, status=413)
        if not form.is_valid():
            return _model_list(request, upload_form=form, status=422)
        file = form.cleaned_data["file"]
        try:
            version = services.register_version(
                form.cleaned_data["family"],
                file.temporary_file_path() if hasattr(file, "temporary_file_path") else file,
                filename=file.name,
                input_shape=form.cleaned_data["input_shape"],
                notes=form.cleaned_data["notes"],
                created_by=request.user,
            )
        except (checkpoints.CheckpointError, services.RegistryError) as error:
            form.add_error("file", str(error))
            return _model_list(request, upload_form=form, status=422)
        messages.success(request, f"{version} uploaded and checked: {version.parameters:,} parameters.")
        return redirect("registry:version", pk=version.pk)


class FamilyDetailView(ViewerRequiredMixin, DetailView):
    template_name = "registry/family_detail.html"
    context_object_name = "family"

    def get_queryset(self):
        return ModelFamily.objects.select_related("tenant")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["versions"] = self.object.versions.select_related("created_by").annotate(job_count=Count("jobs"))
        context["packages"] = self.object.packages.select_related("model_version", "job")
        return context


class VersionDetailView(ViewerRequiredMixin, DetailView):
    """A version; operators start a compression job from a preset here."""

    template_name = "registry/version_detail.html"
    context_object_name = "version"

    def get_queryset(self):
        return ModelVersion.objects.select_related("family__tenant", "created_by")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.setdefault("compress_form", CompressForm())
        context["presets"] = PRESETS.values()
        context["jobs"] = self.object.jobs.select_related("package")[:50]
        return context

    def post(self, request, pk):
        self.object = self.get_object()
        if not can_operate(request.user):
            messages.error(request, "only operators may start compression jobs")
            return redirect("registry:version", pk=pk)
        form = CompressForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(compress_form=form), status=422)
        preset = form.cleaned_data["preset"]
        job = services.start_compression_job(
            self.object, preset, form.cleaned_data["overrides"], created_by=request.user
        )
        messages.success(request, f"Compression job {job.pk} ({PRESETS[preset].label}) queued.")
        return redirect("registry:job", pk=job.pk)


class JobDetailView(ViewerRequiredMixin, DetailView):
    """Progress bar and log re-render by htmx polling; the loss chart polls progress.json."""

    template_name = "registry/job_detail.html"
    context_object_name = "job"

    def get_queryset(self):
        return CompressionJob.objects.select_related("model_version__family", "created_by")

    def get_template_names(self):
        if _is_htmx(self.request) and self.request.GET.get("part") == "progress":
            return ["registry/_job_progress.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["preset"] = PRESETS.get(self.object.preset)
        context["package"] = Package.objects.filter(job=self.object).first()
        return context


class JobProgressJson(ViewerRequiredMixin, View):
    def get(self, request, pk):
        job = get_object_or_404(CompressionJob, pk=pk)
        return JsonResponse(
            {
                "status": job.status,
                "final": job.is_final,
                "phase": job.phase,
                "step": job.step,
                "total": job.total,
                "percent": round(job.percent, 1),
                "loss_curve": job.loss_curve,
            }
        )


class JobCancelView(OperatorRequiredMixin, View):
    def post(self, request, pk):
        job = get_object_or_404(CompressionJob, pk=pk)
        try:
            services.cancel_job(job)
        except services.RegistryError as error:
            messages.error(request, str(error))
        else:
            messages.info(request, f"Cancel requested for job {job.pk}.")
        return redirect("registry:job", pk=pk)


class PackageReportView(ViewerRequiredMixin, DetailView):
    """A package's report: per-layer table and bytes, and where it sits among the family's other packages."""

    template_name = "registry/package_report.html"
    context_object_name = "package"

    def get_queryset(self):
        return Package.objects.select_related("family__tenant", "model_version", "job")

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        package = self.object
        report = (package.job.report if package.job else None) or {}
        siblings = package.family.packages.select_related("job").order_by("version")
        context["report"] = report
        context["layers"] = report.get("layers", [])
        context["measured_sensitivity"] = any(layer.get("sensitivity") is not None for layer in context["layers"])
        context["chart_data"] = {
            "layers": {
                "names": [layer["name"] for layer in report.get("layers", [])],
                "packed_bytes": [layer["packed_bytes"] for layer in report.get("layers", [])],
                "fp32_bytes": [4 * layer["weights"] for layer in report.get("layers", [])],
            },
            "family": [
                {
                    "label": f"v{other.version} {other.job.preset if other.job else other.codebook}",
                    "ratio": round(other.compression_ratio, 2),
                    "metric": other.metric_after,
                    "fp32_metric": other.metric_before,
                    "current": other.pk == package.pk,
                }
                for other in siblings
            ],
            "metric_name": package.metric_name or "mAP50",
        }
        return context
