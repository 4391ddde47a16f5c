from django.urls import path
from rest_framework.routers import SimpleRouter

from fleet_server.registry.api import views

router = SimpleRouter()  # the devices router serves the API root
router.register("model-families", views.ModelFamilyViewSet)
router.register("model-versions", views.ModelVersionViewSet)
router.register("compression-jobs", views.CompressionJobViewSet)
router.register("packages", views.PackageViewSet)

urlpatterns = [path("signing-keys/", views.SigningKeysView.as_view(), name="signing-keys"), *router.urls]
