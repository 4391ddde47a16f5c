# The README's two commands: `make demo` and `make test`. Plus `make bench`.
# Each creates the virtualenv when it is missing and installs the project into it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
EXTRAS := agent,server,compression,dev

# Tests run against the real services on this machine (override any of them in the environment).
export TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/fleet
export TEST_CELERY_BROKER_URL ?= redis://127.0.0.1:6379/15
export TEST_MQTT_URL ?= mqtt://127.0.0.1:1883

.PHONY: demo test lint bench install browser clean

$(INSTALLED): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(PY) manage.py demo

# Debian's Chromium drives the browser tests (Playwright never downloads a browser here).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)); }

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

test: $(INSTALLED) browser lint
	$(PY) -m pytest

bench: $(INSTALLED)
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
