from django.urls import path

from fleet_server.events.console import views

app_name = "events"

urlpatterns = [
    path("", views.ParkListView.as_view(), name="parks"),
    path("<slug:slug>/", views.ParkView.as_view(), name="park"),
    path("<slug:slug>/occupancy.json", views.ParkOccupancyJson.as_view(), name="park-occupancy"),
]
