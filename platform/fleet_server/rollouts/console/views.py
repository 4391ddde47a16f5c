"""Console pages of rollouts: the deployments, a new deployment, a deployment's live per-device table."""

from django.contrib import messages
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.views import View
from django.views.generic import DetailView, ListView

from fleet_server.console.mixins import OperatorRequiredMixin, ViewerRequiredMixin
from fleet_server.rollouts import services
from fleet_server.rollouts.console.forms import DeployForm, PackageChoiceForm, RollbackForm
from fleet_server.rollouts.models import Deployment, DeploymentTarget


def _is_htmx(request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _deployments():
    return Deployment.objects.select_related("package__family__tenant", "created_by").prefetch_related(
        Prefetch(
            "targets",
            DeploymentTarget.objects.select_related("device__site", "command", "rollback_command"),
        )
    )


class DeploymentListView(ViewerRequiredMixin, ListView):
    template_name = "rollouts/deployments.html"
    context_object_name = "deployments"
    paginate_by = 50

    def get_queryset(self):
        return _deployments()


class DeploymentCreateView(OperatorRequiredMixin, View):
    """Pick a package (or come from its page with ?package=), tick devices, deploy."""

    template_name = "rollouts/deployment_form.html"

    def _package(self, request):
        choice = PackageChoiceForm(request.GET or request.POST or None)
        return choice, (choice.cleaned_data["package"] if choice.is_bound and choice.is_valid() else None)

    def get(self, request):
        choice, package = self._package(request)
        form = DeployForm(package=package) if package else None
        return render(request, self.template_name, {"choice": choice, "package": package, "form": form})

    def post(self, request):
        choice, package = self._package(request)
        if package is None:
            return render(request, self.template_name, {"choice": choice, "package": None, "form": None}, status=422)
        form = DeployForm(request.POST, package=package)
        if form.is_valid():
            try:
                deployment = services.deploy(
                    package,
                    form.cleaned_data["devices"],
                    created_by=request.user,
                    scene_configs=form.cleaned_data["scene_configs"],
                    observe_s=form.cleaned_data["observe_s"],
                    note=form.cleaned_data["note"],
                )
            except services.DeploymentError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Deploying {deployment} to {deployment.targets.count()} devices.")
                return redirect("rollouts:deployment", pk=deployment.pk)
        context = {"choice": choice, "package": package, "form": form}
        return render(request, self.template_name, context, status=422)


class DeploymentDetailView(ViewerRequiredMixin, DetailView):
    """The per-device table re-renders every 2 s (htmx) until every target has a final state."""

    template_name = "rollouts/deployment_detail.html"
    context_object_name = "deployment"

    def get_queryset(self):
        return _deployments()

    def get_template_names(self):
        if _is_htmx(self.request) and self.request.GET.get("part") == "targets":
            return ["rollouts/_targets.html"]
        return [self.template_name]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context["summary"] = self.object.summary()
        context["targets"] = self.object.targets.all()
        return context


class TargetRollbackView(OperatorRequiredMixin, View):
    def post(self, request, pk, device_id):
        deployment = get_object_or_404(Deployment, pk=pk)
        target = get_object_or_404(deployment.targets.select_related("device"), device_id=device_id)
        form = RollbackForm(request.POST)
        reason = form.cleaned_data["reason"] if form.is_valid() else ""
        try:
            services.rollback(
                [target.device], reason or f"rolled back from {deployment}", request.user, deployment=deployment
            )
        except services.DeploymentError as exc:
            messages.error(request, str(exc))
        else:
            messages.info(request, f"Rollback sent to {target.device.name}.")
        return redirect("rollouts:deployment", pk=pk)
