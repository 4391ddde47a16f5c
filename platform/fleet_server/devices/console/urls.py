from django.urls import path

from fleet_server.devices.console import views

urlpatterns = [
    path("fleet/", views.FleetView.as_view(), name="fleet"),
    path("devices/<str:pk>/", views.DeviceDetailView.as_view(), name="device"),
    path("devices/<str:pk>/telemetry.json", views.DeviceTelemetryJson.as_view(), name="device-telemetry"),
    path("devices/<str:pk>/commands/", views.DeviceCommandsView.as_view(), name="device-commands"),
    path("parks/", views.SiteListView.as_view(), name="sites"),
    path("parks/new/", views.SiteCreateView.as_view(), name="site-create"),
    path("enroll/", views.ClaimTokenView.as_view(), name="claim-tokens"),
]
