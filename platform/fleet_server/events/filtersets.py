"""Filters for the event and occupancy API."""

import django_filters

from fleet_server.devices.models import Site
from fleet_server.events.models import Event, Rule, SpaceOccupancy


class EventFilterSet(django_filters.FilterSet):
    site = django_filters.ModelChoiceFilter(queryset=Site.objects.all(), to_field_name="slug", label="Park (slug)")
    rule = django_filters.MultipleChoiceFilter(choices=Rule.choices)
    camera = django_filters.CharFilter()
    device = django_filters.CharFilter(field_name="device_id")
    since = django_filters.IsoDateTimeFilter(field_name="start", lookup_expr="gte", label="Started at or after")
    until = django_filters.IsoDateTimeFilter(field_name="start", lookup_expr="lt", label="Started before")
    open = django_filters.BooleanFilter(field_name="end", lookup_expr="isnull", label="Still open (true/false)")

    class Meta:
        model = Event
        fields = ["site", "rule", "camera", "device", "since", "until", "open"]


class SpaceOccupancyFilterSet(django_filters.FilterSet):
    site = django_filters.ModelChoiceFilter(queryset=Site.objects.all(), to_field_name="slug", label="Park (slug)")
    camera = django_filters.CharFilter()
    occupied = django_filters.BooleanFilter()

    class Meta:
        model = SpaceOccupancy
        fields = ["site", "camera", "occupied"]
