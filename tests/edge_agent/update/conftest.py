"""Signing keys, a device key and real packages, built once per session."""

import pytest

from model_store.crypto import Keyring
from tests.edge_agent.update.helpers import device_key
from tests.edge_agent.update.packages import package_tar


@pytest.fixture(scope="session")
def keyring(tmp_path_factory) -> Keyring:
    return Keyring.create(tmp_path_factory.mktemp("keyring"))


@pytest.fixture(scope="session")
def device():
    return device_key()


@pytest.fixture(scope="session")
def packages(keyring) -> dict[int, bytes]:
    """Package versions 1-3 of one model, each with other weights."""
    return {version: package_tar(keyring, version, seed=version) for version in (1, 2, 3)}
