"""Production settings: refuse to start without a secret; pass Django's deployment checks."""

import os
import subprocess
import sys

from tests.helpers import REPO


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    ignored = ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    clean = {k: v for k, v in os.environ.items() if k not in ignored}
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        cwd=REPO, env={**clean, "DJANGO_SETTINGS_MODULE": "fleet_server.settings", **env},
        capture_output=True, text=True, check=False,
    )  # fmt: skip


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage("check", DEBUG="0", ALLOWED_HOSTS="fleet.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY is not set and DEBUG=0" in result.stderr


def test_production_refuses_to_start_without_allowed_hosts():
    result = _manage("check", DEBUG="0", SECRET_KEY="x" * 60)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is empty" in result.stderr


def test_a_malformed_boolean_is_named():
    result = _manage("check", DEBUG="maybe")
    assert result.returncode != 0
    assert "DEBUG='maybe' is not a boolean" in result.stderr


def test_deploy_checks_pass_with_production_settings():
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DEBUG="0", SECRET_KEY="k" * 20 + "Zq8!x@v#b$n%m^" * 4, ALLOWED_HOSTS="fleet.example.com",
        DATABASE_URL=os.environ["DATABASE_URL"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
