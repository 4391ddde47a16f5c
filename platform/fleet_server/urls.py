from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from fleet_server.console.views import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("login/", auth_views.LoginView.as_view(template_name="console/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("fleet_server.devices.api.urls")),
    path("api/v1/", include("fleet_server.registry.api.urls")),
    path("api/v1/", include("fleet_server.events.api.urls")),
    path("api/v1/", include("fleet_server.rollouts.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("models/", include("fleet_server.registry.console.urls")),
    path("occupancy/", include("fleet_server.events.console.urls")),
    path("deployments/", include("fleet_server.rollouts.console.urls")),
    path("", include("fleet_server.console.urls")),
]
