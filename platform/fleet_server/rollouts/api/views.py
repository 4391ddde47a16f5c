from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from fleet_server.api.authentication import ApiKeyUser
from fleet_server.api.viewsets import TenantScopedMixin
from fleet_server.devices.models import Device
from fleet_server.registry.models import Package
from fleet_server.rollouts import services
from fleet_server.rollouts.api import serializers
from fleet_server.rollouts.filtersets import DeploymentFilterSet
from fleet_server.rollouts.models import Deployment, DeploymentTarget


def _tenant_filter(request, queryset, tenant_field: str):
    if isinstance(request.user, ApiKeyUser):
        return queryset.filter(**{tenant_field: request.user.tenant})
    return queryset


def _devices(request, ids: list[str]) -> list[Device] | Response:
    """The caller's devices with these ids, or a 400 naming the ones it cannot see."""
    queryset = _tenant_filter(
        request, Device.objects.select_related("site").prefetch_related("cameras"), "site__tenant"
    )
    found = {device.pk: device for device in queryset.filter(pk__in=ids)}
    missing = [device_id for device_id in dict.fromkeys(ids) if device_id not in found]
    if missing:
        return Response({"devices": [f"unknown devices: {', '.join(missing)}"]}, status=status.HTTP_400_BAD_REQUEST)
    return list(found.values())


class DeploymentViewSet(TenantScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deployments of a package to devices; each target's state, progress and reason follow its device's acks."""

    queryset = Deployment.objects.select_related("package__family", "created_by").prefetch_related(
        Prefetch("targets", DeploymentTarget.objects.select_related("device", "command"))
    )
    serializer_class = serializers.DeploymentSerializer
    filterset_class = DeploymentFilterSet
    ordering_fields = ["created_at"]
    tenant_field = "package__family__tenant"

    @extend_schema(
        request=serializers.DeploymentRequestSerializer,
        responses={
            201: serializers.DeploymentSerializer,
            400: OpenApiResponse(description="A target cannot take the package; nothing was sent."),
        },
    )
    def create(self, request, *args, **kwargs):
        """Send a package to devices: one deploy command per device, all or none."""
        data = serializers.DeploymentRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        package = _tenant_filter(request, Package.objects.select_related("family"), "family__tenant")
        package = package.filter(pk=fields["package"]).first()
        if package is None:
            return Response({"package": [f"unknown package {fields['package']}"]}, status=status.HTTP_400_BAD_REQUEST)
        devices = _devices(request, fields["devices"])
        if isinstance(devices, Response):
            return devices
        try:
            deployment = services.deploy(
                package,
                devices,
                created_by=request.user,
                scene_configs=fields["scene_configs"],
                observe_s=fields["observe_s"],
                name=fields["name"],
                note=fields["note"],
            )
        except services.DeploymentError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        data = self.get_serializer(self.get_queryset().get(pk=deployment.pk)).data
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="v1_deployments_rollback_targets",
        request=serializers.RollbackRequestSerializer,
        responses={202: serializers.RollbackCommandSerializer(many=True)},
    )
    @action(detail=True, methods=["post"], url_path="rollback")
    def rollback_targets(self, request, pk=None):
        """Roll back this deployment's targets (all, or the given devices) to their previous model."""
        deployment = self.get_object()
        data = serializers.RollbackRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        ids = data.validated_data.get("devices") or [target.device_id for target in deployment.targets.all()]
        return self._rollback(request, ids, data.validated_data["reason"], deployment)

    @extend_schema(
        operation_id="v1_deployments_rollback_devices",
        request=serializers.RollbackRequestSerializer,
        responses={202: serializers.RollbackCommandSerializer(many=True)},
    )
    @action(detail=False, methods=["post"])
    def rollback(self, request):
        """Roll devices back to their previous model and scene configs, whatever deployed the current one."""
        data = serializers.RollbackRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not data.validated_data.get("devices"):
            return Response({"devices": ["name at least one device"]}, status=status.HTTP_400_BAD_REQUEST)
        return self._rollback(request, data.validated_data["devices"], data.validated_data["reason"], None)

    def _rollback(self, request, ids, reason, deployment):
        devices = _devices(request, ids)
        if isinstance(devices, Response):
            return devices
        try:
            commands = services.rollback(devices, reason, request.user, deployment=deployment)
        except services.DeploymentError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            serializers.RollbackCommandSerializer(commands, many=True).data, status=status.HTTP_202_ACCEPTED
        )
