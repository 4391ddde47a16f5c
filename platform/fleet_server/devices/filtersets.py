"""Filters shared by the REST API and the console's fleet list."""

import django_filters
from django.db.models import Q

from fleet_server.devices.models import Device, DeviceKind, Site


class SiteFilterSet(django_filters.FilterSet):
    class Meta:
        model = Site
        fields = {"slug": ["exact"], "name": ["exact", "icontains"]}


class DeviceFilterSet(django_filters.FilterSet):
    site = django_filters.ModelChoiceFilter(
        queryset=Site.objects.all(), to_field_name="slug", label="Park", empty_label="any park"
    )
    kind = django_filters.ChoiceFilter(choices=DeviceKind.choices, empty_label="any kind")
    tag = django_filters.CharFilter(field_name="tags__name", label="Tag", distinct=True)
    online = django_filters.BooleanFilter(widget=django_filters.widgets.BooleanWidget(), label="Online (true/false)")
    q = django_filters.CharFilter(method="search", label="Search")

    class Meta:
        model = Device
        fields = ["site", "kind", "tag", "online"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(id__istartswith=value))
