from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "fleet_server.console"
    label = "console"
    verbose_name = "Console"
