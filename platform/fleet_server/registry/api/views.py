import json

from django.conf import settings
from django.db.models import Count
from django.http import FileResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, renderers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from fleet_server.api.viewsets import TenantScopedMixin
from fleet_server.registry import checkpoints, presets, services
from fleet_server.registry.api import serializers
from fleet_server.registry.filtersets import (
    CompressionJobFilterSet,
    ModelFamilyFilterSet,
    ModelVersionFilterSet,
    PackageFilterSet,
)
from fleet_server.registry.models import CompressionJob, ModelFamily, ModelVersion, Package
from fleet_server.registry.storage import blob_store, signing_keyring
from fleet_server.registry.uploads import SizeLimitedUploadHandler


class TenantScopedReadCreateViewSet(
    TenantScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """List, retrieve and create; what a registry object is made of does not change afterwards."""


class ModelFamilyViewSet(TenantScopedReadCreateViewSet, mixins.UpdateModelMixin):
    """Model families; name, task and labels are fixed at creation (packages carry them)."""

    queryset = ModelFamily.objects.select_related("tenant").annotate(
        version_count=Count("versions", distinct=True), package_count=Count("packages", distinct=True)
    )
    serializer_class = serializers.ModelFamilySerializer
    filterset_class = ModelFamilyFilterSet
    ordering_fields = ["name", "created_at"]
    ordering = ["name"]
    tenant_field = "tenant"


class ModelVersionViewSet(TenantScopedReadCreateViewSet):
    """Uploaded float models. Upload: multipart with `family`, `file` and optionally `input_shape`, `notes`."""

    queryset = ModelVersion.objects.select_related("family", "created_by")
    serializer_class = serializers.ModelVersionSerializer
    filterset_class = ModelVersionFilterSet
    ordering_fields = ["version", "created_at"]
    tenant_field = "family__tenant"
    upload_limit: SizeLimitedUploadHandler | None = None

    def get_parsers(self):
        if self.request is not None and self.request.method == "POST":
            return [MultiPartParser()]
        return super().get_parsers()

    def initialize_request(self, request, *args, **kwargs):
        # Before anything reads the body (session authentication's CSRF check does): the upload spools
        # through the size-limited handler only.
        if request.method == "POST":
            self.upload_limit = SizeLimitedUploadHandler(request, max_bytes=settings.MODEL_UPLOAD_MAX_BYTES)
            request.upload_handlers = [self.upload_limit]
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(
        request={"multipart/form-data": serializers.ModelVersionUploadSerializer},
        responses={
            201: serializers.ModelVersionSerializer,
            400: OpenApiResponse(description="Not a checkpoint of a detector with the family's labels."),
            413: OpenApiResponse(description="Larger than MODEL_UPLOAD_MAX_BYTES."),
        },
    )
    def create(self, request, *args, **kwargs):
        upload = serializers.ModelVersionUploadSerializer(data=request.data)
        if self.upload_limit is not None and self.upload_limit.refused:
            return Response({"file": [self.upload_limit.refused]}, status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        upload.is_valid(raise_exception=True)
        fields = upload.validated_data
        file = fields["file"]
        source = file.temporary_file_path() if hasattr(file, "temporary_file_path") else file
        try:
            version = services.register_version(
                fields["family"],
                source,
                filename=file.name,
                input_shape=fields.get("input_shape", checkpoints.DEFAULT_INPUT_SHAPE),
                notes=fields["notes"],
                created_by=request.user,
            )
        except (checkpoints.CheckpointError, services.RegistryError) as error:
            return Response({"file": [str(error)]}, status=status.HTTP_400_BAD_REQUEST)
        data = serializers.ModelVersionSerializer(version, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)


class CompressionJobViewSet(TenantScopedReadCreateViewSet):
    """Compression jobs: start one from a preset, watch its progress, cancel it."""

    queryset = CompressionJob.objects.select_related("model_version__family", "package")
    serializer_class = serializers.CompressionJobSerializer
    filterset_class = CompressionJobFilterSet
    ordering_fields = ["created_at", "status"]
    tenant_field = "model_version__family__tenant"

    def get_serializer_class(self):
        if self.action == "list":
            return serializers.CompressionJobSummarySerializer
        return super().get_serializer_class()

    @extend_schema(
        request=serializers.CompressionJobRequestSerializer,
        responses={202: serializers.CompressionJobSerializer},
        description="Queue a job; a Celery worker runs it. Presets: "
        + "; ".join(f"`{p.key}`: {p.description}" for p in presets.PRESETS.values()),
    )
    def create(self, request, *args, **kwargs):
        data = serializers.CompressionJobRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        try:
            job = services.start_compression_job(
                fields["model_version"], fields["preset"], fields["config"], created_by=request.user
            )
        except presets.PresetError as error:
            return Response({"config": [str(error)]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(serializers.CompressionJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={202: serializers.CompressionJobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued job now, or a running one at its next progress report."""
        job = self.get_object()
        try:
            job = services.cancel_job(job)
        except services.RegistryError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(serializers.CompressionJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class EncryptedPackageRenderer(renderers.BaseRenderer):
    """Lets a client ask for `application/octet-stream`; errors still render as JSON text."""

    media_type = "application/octet-stream"
    format = "bin"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, bytes) else json.dumps(data).encode()


class PackageViewSet(TenantScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Signed, encrypted model packages; `download` streams the ciphertext devices receive."""

    queryset = Package.objects.select_related("family", "model_version")
    serializer_class = serializers.PackageSerializer
    filterset_class = PackageFilterSet
    ordering_fields = ["version", "created_at", "compression_ratio"]
    tenant_field = "family__tenant"

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiResponse(description="The ciphertext.")})
    @action(detail=True, methods=["get"], renderer_classes=[renderers.JSONRenderer, EncryptedPackageRenderer])
    def download(self, request, pk=None):
        """The encrypted package (AES-256-GCM); its sha256 is in `X-Content-SHA256` and the package's `blob_sha256`."""
        package = self.get_object()
        store = blob_store()
        if not store.exists(package.blob_sha256):
            return Response(
                {"detail": f"the blob {package.blob_sha256} of this package is missing from the blob store"},
                status=status.HTTP_410_GONE,
            )
        response = FileResponse(
            store.open(package.blob_sha256),
            as_attachment=True,
            filename=f"{package.family.name}-{package.version}.spkg.enc",
            content_type="application/octet-stream",
        )
        response["X-Content-SHA256"] = package.blob_sha256
        response["Content-Length"] = str(package.size_bytes)
        return response


class SigningKeysView(APIView):
    """The platform's package-signing public keys (what devices pin), and which one signs new packages."""

    @extend_schema(responses=serializers.SigningKeysSerializer)
    def get(self, request):
        keyring = signing_keyring()
        return Response({"active": keyring.active().key_id, "keys": keyring.export_public()})
