"""Base viewsets: every queryset is narrowed to the caller's tenant when the caller is an API key."""

from rest_framework import mixins, viewsets

from fleet_server.api.authentication import ApiKeyUser


class TenantScopedMixin:
    """Set ``tenant_field`` to the lookup path from the model to its Tenant (e.g. ``site__tenant``).

    Another tenant's object is simply not in the queryset, so asking for it answers 404.
    """

    tenant_field = "tenant"

    def get_queryset(self):
        queryset = super().get_queryset()
        user = self.request.user
        if isinstance(user, ApiKeyUser):
            queryset = queryset.filter(**{self.tenant_field: user.tenant})
        return queryset


class TenantScopedModelViewSet(TenantScopedMixin, viewsets.ModelViewSet):
    pass


class TenantScopedReadOnlyViewSet(TenantScopedMixin, viewsets.ReadOnlyModelViewSet):
    """List and retrieve; the objects come from devices (events, occupancy)."""


class TenantScopedReadUpdateViewSet(
    TenantScopedMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """List, retrieve and update; objects are created elsewhere (devices by enrollment)."""

    http_method_names = ["get", "patch", "post", "head", "options"]
