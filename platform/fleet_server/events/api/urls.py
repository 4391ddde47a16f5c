from rest_framework.routers import DefaultRouter

from fleet_server.events.api import views

router = DefaultRouter()
router.register("events", views.EventViewSet)
router.register("occupancy", views.SpaceOccupancyViewSet)

urlpatterns = router.urls
