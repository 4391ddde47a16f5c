from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    name = "fleet_server.rollouts"
    label = "rollouts"
    verbose_name = "Rollouts"
