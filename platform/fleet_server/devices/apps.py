from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "fleet_server.devices"
    label = "devices"
    verbose_name = "Devices"
