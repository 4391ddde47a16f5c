from django.urls import path

from fleet_server.rollouts.console import views

app_name = "rollouts"

urlpatterns = [
    path("", views.DeploymentListView.as_view(), name="deployments"),
    path("new/", views.DeploymentCreateView.as_view(), name="deployment-create"),
    path("<int:pk>/", views.DeploymentDetailView.as_view(), name="deployment"),
    path("<int:pk>/rollback/<str:device_id>/", views.TargetRollbackView.as_view(), name="target-rollback"),
]
