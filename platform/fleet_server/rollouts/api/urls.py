from rest_framework.routers import SimpleRouter

from fleet_server.rollouts.api import views

router = SimpleRouter()  # the devices router serves the API root
router.register("deployments", views.DeploymentViewSet)

urlpatterns = router.urls
