from datetime import timedelta

from django.db.models import Count, Q
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from fleet_server.api.permissions import IsOperator
from fleet_server.api.viewsets import TenantScopedModelViewSet, TenantScopedReadUpdateViewSet
from fleet_server.devices import services
from fleet_server.devices.api import serializers
from fleet_server.devices.filtersets import DeviceFilterSet, SiteFilterSet
from fleet_server.devices.models import ClaimToken, Device, Site


class SiteViewSet(TenantScopedModelViewSet):
    queryset = (
        Site.objects.select_related("tenant")
        .annotate(
            device_count=Count("devices", distinct=True),
            online_count=Count("devices", filter=Q(devices__online=True), distinct=True),
        )
        .order_by("name")
    )  # Meta.ordering does not apply to GROUP BY queries
    serializer_class = serializers.SiteSerializer
    filterset_class = SiteFilterSet
    lookup_field = "slug"
    tenant_field = "tenant"


class DeviceViewSet(TenantScopedReadUpdateViewSet):
    queryset = Device.objects.select_related("site").prefetch_related("tags", "cameras")
    serializer_class = serializers.DeviceSerializer
    filterset_class = DeviceFilterSet
    ordering_fields = ["name", "last_seen_at", "enrolled_at"]
    tenant_field = "site__tenant"

    @extend_schema(
        parameters=[OpenApiParameter("minutes", int, description="How far back (default 60, at most 10080).")],
        responses=serializers.TelemetrySampleSerializer(many=True),
    )
    @action(detail=True, methods=["get"])
    def telemetry(self, request, pk=None):
        """Telemetry samples of the last minutes, oldest first (at most 2,000)."""
        device = self.get_object()
        try:
            minutes = min(max(int(request.query_params.get("minutes", 60)), 1), 7 * 24 * 60)
        except ValueError:
            return Response({"minutes": ["must be an integer"]}, status=status.HTTP_400_BAD_REQUEST)
        samples = device.telemetry.filter(received_at__gte=timezone.now() - timedelta(minutes=minutes))
        latest = list(samples.order_by("-received_at")[:2000])[::-1]
        return Response(serializers.TelemetrySampleSerializer(latest, many=True).data)

    @extend_schema(
        methods=["get"],
        responses=serializers.CommandSerializer(many=True),
        description="Recent commands, newest first.",
    )
    @extend_schema(
        methods=["post"],
        request=serializers.CommandRequestSerializer,
        responses={202: serializers.CommandSerializer},
        description="Queue a command; it reaches the device through the outbox even if the broker is down now.",
    )
    @action(detail=True, methods=["get", "post"])
    def commands(self, request, pk=None):
        device = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(device.commands.all())
            return self.get_paginated_response(serializers.CommandSerializer(page, many=True).data)
        if not IsOperator().has_permission(request, self):
            return Response({"detail": IsOperator.message}, status=status.HTTP_403_FORBIDDEN)
        request_data = serializers.CommandRequestSerializer(data=request.data)
        request_data.is_valid(raise_exception=True)
        try:
            command = services.send_command(
                device,
                request_data.validated_data["name"],
                request_data.validated_data["args"],
                created_by=request.user,
                ttl_s=request_data.validated_data.get("ttl_s"),
            )
        except services.CommandError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(serializers.CommandSerializer(command).data, status=status.HTTP_202_ACCEPTED)


class ClaimTokenViewSet(mixins.CreateModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """One-time enrollment tokens (operators only). The token itself is returned once, on creation."""

    queryset = ClaimToken.objects.select_related("site")
    serializer_class = serializers.ClaimTokenSerializer
    permission_classes = [IsOperator]

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        hours = serializer.validated_data.get("hours")
        claim, token = services.create_claim_token(
            serializer.validated_data["site"],
            created_by=request.user,
            ttl=timedelta(hours=hours) if hours else None,
            note=serializer.validated_data.get("note", ""),
        )
        data = self.get_serializer(claim).data
        data["token"] = token
        return Response(data, status=status.HTTP_201_CREATED)


class EnrollView(APIView):
    """A device exchanges its claim token for its identity and MQTT credentials (no other authentication)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "enroll"

    @extend_schema(
        request=serializers.EnrollRequestSerializer,
        responses={201: serializers.EnrollResponseSerializer},
        auth=[],
    )
    def post(self, request):
        data = serializers.EnrollRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        try:
            enrollment = services.enroll_device(
                services.EnrollmentRequest(
                    token=fields["token"],
                    name=fields["name"],
                    kind=fields["kind"],
                    public_key=fields["public_key"],
                    agent_version=fields["agent_version"],
                    hardware=fields["hardware"],
                    cameras=tuple(services.CameraSpec(**camera) for camera in fields["cameras"]),
                )
            )
        except services.EnrollmentError as exc:
            code = status.HTTP_410_GONE if exc.code in ("token_used", "token_expired") else status.HTTP_400_BAD_REQUEST
            return Response({"code": exc.code, "detail": exc.message}, status=code)
        device = enrollment.device
        return Response(
            {
                "device_id": device.pk,
                "name": device.name,
                "site": device.site.slug,
                "mqtt": {
                    "url": enrollment.mqtt_url,
                    "username": enrollment.mqtt_username,
                    "password": enrollment.mqtt_password,
                    "client_id": f"agent-{device.pk}",
                    "keepalive_s": device.keepalive_s,
                },
                "telemetry_interval_s": device.telemetry_interval_s,
                "signing_keys": enrollment.signing_keys,
            },
            status=status.HTTP_201_CREATED,
        )
