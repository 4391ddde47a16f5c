from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "fleet_server.tenants"
    label = "tenants"
    verbose_name = "Tenants"
