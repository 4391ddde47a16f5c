"""Settings for the fleet platform, all read from the environment.

Every setting has an embedded default that runs on a laptop (SQLite, a local MQTT broker,
Redis on 127.0.0.1); production sets ``DEBUG=0`` and must then provide ``SECRET_KEY`` and
``ALLOWED_HOSTS`` or the platform refuses to start. See docs/operations.md for the full table.
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from fleet_server.env import get_bool, get_float, get_int, get_list, get_str

PLATFORM_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = PLATFORM_DIR.parent
DATA_DIR = Path(get_str("FLEET_DATA_DIR", str(REPO_ROOT / "var")))

DEBUG = get_bool("DEBUG", True)

SECRET_KEY = get_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set and DEBUG=0: refusing to start in production with a guessable key. "
            "Set SECRET_KEY to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"  # noqa: S105

ALLOWED_HOSTS = get_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is empty and DEBUG=0: list the host names the platform serves.")
CSRF_TRUSTED_ORIGINS = get_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "fleet_server.tenants",
    "fleet_server.devices",
    "fleet_server.registry",
    "fleet_server.events",
    "fleet_server.rollouts",
    "fleet_server.mqtt_bridge",
    "fleet_server.console",
    "fleet_server.demo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "fleet_server.urls"
WSGI_APPLICATION = "fleet_server.wsgi.application"
ASGI_APPLICATION = "fleet_server.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [PLATFORM_DIR / "fleet_server" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "fleet_server.console.context_processors.roles",
            ],
        },
    },
]

# --- database --------------------------------------------------------------------------------
DATABASES = {
    "default": dj_database_url.parse(
        get_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'fleet.sqlite3'}"),
        conn_max_age=get_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # The demo runs web, ingest, worker and beat against one file: WAL lets readers and the
    # writer proceed together, IMMEDIATE transactions wait for the lock instead of failing.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(get_str("STATIC_ROOT", str(DATA_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console:fleet"
LOGOUT_REDIRECT_URL = "login"

# --- security (production) -------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = get_bool("SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = get_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = get_bool("CSRF_COOKIE_SECURE", not DEBUG)
SECURE_HSTS_SECONDS = get_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# The header only makes the site eligible; submitting it to the preload list stays a human decision.
SECURE_HSTS_PRELOAD = get_bool("SECURE_HSTS_PRELOAD", not DEBUG)
# Health probes from Kubernetes come over plain HTTP inside the cluster.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
X_FRAME_OPTIONS = "DENY"

# --- REST API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "fleet_server.api.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["fleet_server.api.permissions.IsConsoleUserOrTenantReader"],
    "DEFAULT_PAGINATION_CLASS": "fleet_server.api.pagination.FleetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"enroll": get_str("ENROLL_THROTTLE_RATE", "30/minute")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Smart-park fleet API",
    "DESCRIPTION": (
        "Parks, devices and their health for business units (API key: `Authorization: Api-Key <key>`), "
        "and device enrollment for agents."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- MQTT --------------------------------------------------------------------------------------
MQTT_URL = get_str("MQTT_URL", "mqtt://127.0.0.1:1883")
# What enrolling devices are told to connect to (a public name behind a load balancer).
MQTT_PUBLIC_URL = get_str("MQTT_PUBLIC_URL", MQTT_URL)
# Ingest workers share one subscription so each message reaches one of them; empty disables it
# (a broker without shared subscriptions, with a single ingest worker).
MQTT_SHARED_GROUP = get_str("MQTT_SHARED_GROUP", "ingest")
MQTT_INGEST_BATCH = get_int("MQTT_INGEST_BATCH", 500)
MQTT_INGEST_FLUSH_S = get_float("MQTT_INGEST_FLUSH_S", 0.25)
# The blob server (manage.py blob_server): chunks queued or in flight per device, and chunks published
# but not yet acknowledged by the broker across all devices.
BLOB_WINDOW_PER_DEVICE = get_int("BLOB_WINDOW_PER_DEVICE", 16)
BLOB_MAX_INFLIGHT = get_int("BLOB_MAX_INFLIGHT", 256)

# --- the fleet ---------------------------------------------------------------------------------
AGENT_KEEPALIVE_S = get_int("AGENT_KEEPALIVE_S", 30)
AGENT_TELEMETRY_INTERVAL_S = get_float("AGENT_TELEMETRY_INTERVAL_S", 10.0)
# A device is marked offline when it has been silent this long (or 3 telemetry intervals, if longer).
DEVICE_OFFLINE_AFTER_S = get_int("DEVICE_OFFLINE_AFTER_S", 90)
TELEMETRY_RETENTION_HOURS = get_int("TELEMETRY_RETENTION_HOURS", 7 * 24)
CLAIM_TOKEN_DEFAULT_TTL_HOURS = get_int("CLAIM_TOKEN_DEFAULT_TTL_HOURS", 24)
COMMAND_DEFAULT_TTL_S = get_int("COMMAND_DEFAULT_TTL_S", 24 * 3600)
# A deploy command the device has not finished by then expires (the device refuses it if it arrives later).
DEPLOY_COMMAND_TTL_S = get_int("DEPLOY_COMMAND_TTL_S", 24 * 3600)
# Payload bytes per blob chunk of a deployed package (at most fleet_protocol.MAX_CHUNK_BYTES).
BLOB_CHUNK_BYTES = get_int("BLOB_CHUNK_BYTES", 64 * 1024)

# --- model registry ----------------------------------------------------------------------------
# Content-addressed blobs (uploaded checkpoints, encrypted packages) and the Ed25519 signing keys.
BLOB_STORE_ROOT = Path(get_str("BLOB_STORE_ROOT", str(DATA_DIR / "blobs")))
MODEL_SIGNING_KEYRING_DIR = Path(get_str("MODEL_SIGNING_KEYRING_DIR", str(DATA_DIR / "signing-keys")))
MODEL_UPLOAD_MAX_BYTES = get_int("MODEL_UPLOAD_MAX_BYTES", 200 * 1024 * 1024)
# Packages' content keys are stored AES-GCM-sealed under a key derived (HKDF) from this secret. Its own
# setting so that rotating SECRET_KEY does not make every stored package undeployable.
PACKAGE_KEY_SECRET = get_str("PACKAGE_KEY_SECRET", "") or SECRET_KEY
# A running compression job whose worker has not beaten for this long is failed as "worker lost".
COMPRESSION_HEARTBEAT_TIMEOUT_S = get_float("COMPRESSION_HEARTBEAT_TIMEOUT_S", 120.0)
COMPRESSION_PROGRESS_INTERVAL_S = get_float("COMPRESSION_PROGRESS_INTERVAL_S", 0.5)
COMPRESSION_TIME_LIMIT_S = get_int("COMPRESSION_TIME_LIMIT_S", 6 * 3600)

# --- Celery ------------------------------------------------------------------------------------
CELERY_BROKER_URL = get_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The demo's embedded transport when no Redis is reachable: a spool folder on disk.
    _spool = DATA_DIR / "celery-spool"
    for _folder in ("out", "processed"):
        (_spool / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_spool / "out"),
        "data_folder_out": str(_spool / "out"),
        "processed_folder": str(_spool / "processed"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
OUTBOX_POLL_S = get_float("OUTBOX_POLL_S", 5.0)
OUTBOX_RETRY_MAX_S = get_float("OUTBOX_RETRY_MAX_S", 30.0)
CELERY_BEAT_SCHEDULE = {
    "publish-outbox": {
        "task": "fleet_server.mqtt_bridge.tasks.publish_outbox_task",
        "schedule": OUTBOX_POLL_S,
    },
    "mark-silent-devices-offline": {
        "task": "fleet_server.devices.tasks.mark_silent_devices_offline_task",
        "schedule": 15.0,
    },
    "expire-commands": {"task": "fleet_server.devices.tasks.expire_commands_task", "schedule": 60.0},
    "prune-outbox": {"task": "fleet_server.mqtt_bridge.tasks.prune_outbox_task", "schedule": 3600.0},
    "prune-telemetry": {"task": "fleet_server.devices.tasks.prune_telemetry_task", "schedule": 3600.0},
    "fail-lost-compression-jobs": {
        "task": "fleet_server.registry.tasks.fail_lost_compression_jobs_task",
        "schedule": min(60.0, max(1.0, COMPRESSION_HEARTBEAT_TIMEOUT_S / 2)),
    },
    "collect-blob-garbage": {"task": "fleet_server.registry.tasks.collect_blob_garbage_task", "schedule": 3600.0},
}

# --- logging -----------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": get_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
