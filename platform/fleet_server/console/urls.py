from django.urls import include, path
from django.views.generic import RedirectView

app_name = "console"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="console:fleet", permanent=False), name="home"),
    path("", include("fleet_server.devices.console.urls")),
]
