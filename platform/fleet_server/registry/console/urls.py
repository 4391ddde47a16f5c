from django.urls import path

from fleet_server.registry.console import views

app_name = "registry"

urlpatterns = [
    path("", views.ModelListView.as_view(), name="models"),
    path("families/new/", views.FamilyCreateView.as_view(), name="family-create"),
    path("families/<int:pk>/", views.FamilyDetailView.as_view(), name="family"),
    path("versions/upload/", views.VersionUploadView.as_view(), name="version-upload"),
    path("versions/<int:pk>/", views.VersionDetailView.as_view(), name="version"),
    path("jobs/<int:pk>/", views.JobDetailView.as_view(), name="job"),
    path("jobs/<int:pk>/progress.json", views.JobProgressJson.as_view(), name="job-progress"),
    path("jobs/<int:pk>/cancel/", views.JobCancelView.as_view(), name="job-cancel"),
    path("packages/<int:pk>/", views.PackageReportView.as_view(), name="package"),
]
