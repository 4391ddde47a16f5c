from django.urls import path
from rest_framework.routers import DefaultRouter

from fleet_server.devices.api import views

router = DefaultRouter()
router.register("sites", views.SiteViewSet)
router.register("devices", views.DeviceViewSet)
router.register("claim-tokens", views.ClaimTokenViewSet)

urlpatterns = [path("enroll/", views.EnrollView.as_view(), name="enroll"), *router.urls]
