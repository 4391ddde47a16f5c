"""WSGI entry point for gunicorn: ``gunicorn --pythonpath platform fleet_server.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet_server.settings")
application = get_wsgi_application()
