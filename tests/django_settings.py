"""Settings for the test suite: the platform's own settings pointed at the real local services.

TEST_DATABASE_URL, TEST_CELERY_BROKER_URL and TEST_MQTT_URL override the defaults; a developer's
DATABASE_URL is deliberately ignored so tests never touch a real deployment's database.
"""

import os

os.environ["DATABASE_URL"] = os.environ.get("TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/fleet")
os.environ["CELERY_BROKER_URL"] = os.environ.get("TEST_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ["MQTT_URL"] = os.environ.get("TEST_MQTT_URL", "mqtt://127.0.0.1:1883")
os.environ["DEBUG"] = "1"
os.environ.pop("SECRET_KEY", None)

from fleet_server.settings import *  # noqa: F403

# Hashing speed is not what these tests are about.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
