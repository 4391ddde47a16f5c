from django.apps import AppConfig


class EventsConfig(AppConfig):
    name = "fleet_server.events"
    label = "events"
    verbose_name = "Smart-park events"
