from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "fleet_server.registry"
    label = "registry"
    verbose_name = "Model registry"
