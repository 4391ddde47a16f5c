"""The park view: spaces occupied or free, occupancy over time, alerts and line counts, refreshed live."""

from django.db.models import Count, F, Q
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.views import View
from django.views.generic import DetailView, ListView

from fleet_server.console.mixins import ViewerRequiredMixin
from fleet_server.devices.models import Site
from fleet_server.events import services

# The parts of the park page that re-render themselves (htmx polling), by the `part` query parameter.
PARTS = {"spaces": "events/_spaces.html", "alerts": "events/_alerts.html", "counts": "events/_line_counts.html"}


class ParkListView(ViewerRequiredMixin, ListView):
    template_name = "events/parks.html"
    context_object_name = "sites"

    def get_queryset(self):
        return (
            Site.objects.select_related("tenant")
            .annotate(
                space_count=Count("spaces", distinct=True),
                occupied_count=Count("spaces", filter=Q(spaces__occupied=True), distinct=True),
            )
            .annotate(free_count=F("space_count") - F("occupied_count"))
            .order_by("name")
        )


class ParkView(ViewerRequiredMixin, DetailView):
    model = Site
    template_name = "events/park.html"
    context_object_name = "site"

    def get_template_names(self):
        part = self.request.GET.get("part")
        if self.request.headers.get("HX-Request") == "true" and part in PARTS:
            return [PARTS[part]]
        return [self.template_name]

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        site = self.object
        context.update(
            occupancy=services.occupancy_summary(site),
            alerts=services.recent_alerts(site),
            line_counts=services.line_counts(site),
        )
        return context


class ParkOccupancyJson(ViewerRequiredMixin, View):
    def get(self, request, slug):
        site = get_object_or_404(Site, slug=slug)
        try:
            hours = min(max(float(request.GET.get("hours", 24)), 0.1), 24 * 7)
        except ValueError:
            hours = 24.0
        return JsonResponse(services.occupancy_series(site, hours=hours))
