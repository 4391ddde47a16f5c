import os
from pathlib import Path

import pytest

from tests.helpers import BIN, REPO, Mosquitto, Processes


@pytest.fixture
def mosquitto(tmp_path):
    broker = Mosquitto(tmp_path / "mosquitto").start()
    yield broker
    broker.stop()


@pytest.fixture
def processes(tmp_path, request):
    children = Processes(tmp_path / "logs")
    yield children
    children.stop_all()
    call = getattr(request.node, "rep_call", None)
    if call is not None and call.failed:
        for name in children.children:
            print(f"----- {name} -----\n{children.log(name)[-4000:]}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def database_url() -> str:
    """The test database as a URL, for child processes (pytest-django renamed it to test_...)."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


@pytest.fixture
def platform_env(transactional_db):
    """Environment for platform processes (ingest, Celery) started by a test, on the test database."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
        "MQTT_URL": os.environ["MQTT_URL"],
        "DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": f"{REPO / 'platform'}{os.pathsep}{REPO}",
    }
    return env


def manage(*args: str) -> list[str]:
    return [str(BIN / "python"), str(REPO / "manage.py"), *args]


def edge_agent(state_dir: Path, *args: str) -> list[str]:
    return [str(BIN / "edge-agent"), "--state-dir", str(state_dir), *args]
