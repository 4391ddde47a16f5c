"""Filters shared by the registry's REST API and its console lists."""

import django_filters

from fleet_server.registry.models import CompressionJob, JobStatus, ModelFamily, ModelVersion, Package
from fleet_server.registry.presets import PRESET_CHOICES


class ModelFamilyFilterSet(django_filters.FilterSet):
    tenant = django_filters.CharFilter(field_name="tenant__slug", label="Tenant (slug)")

    class Meta:
        model = ModelFamily
        fields = {"name": ["exact", "icontains"], "task": ["exact"]}


class ModelVersionFilterSet(django_filters.FilterSet):
    family_name = django_filters.CharFilter(field_name="family__name", label="Family name")

    class Meta:
        model = ModelVersion
        fields = ["family", "version", "kind"]


class CompressionJobFilterSet(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    preset = django_filters.ChoiceFilter(choices=PRESET_CHOICES)
    family = django_filters.NumberFilter(field_name="model_version__family", label="Family id")

    class Meta:
        model = CompressionJob
        fields = ["model_version", "status", "preset", "family"]


class PackageFilterSet(django_filters.FilterSet):
    family_name = django_filters.CharFilter(field_name="family__name", label="Family name")

    class Meta:
        model = Package
        fields = ["family", "model_version", "codebook", "version"]
