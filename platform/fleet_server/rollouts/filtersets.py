"""Filters of the deployments list (REST API)."""

import django_filters

from fleet_server.rollouts.models import Deployment


class DeploymentFilterSet(django_filters.FilterSet):
    family = django_filters.NumberFilter(field_name="package__family", label="Model family id")
    device = django_filters.CharFilter(field_name="targets__device", label="Device id", distinct=True)

    class Meta:
        model = Deployment
        fields = ["package", "family", "device"]
