"""The Celery app: configuration from Django settings (``CELERY_*``), tasks from each app's tasks.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet_server.settings")

app = Celery("fleet_server")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
