from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "fleet_server.demo"
    label = "demo"
    verbose_name = "Demo"
