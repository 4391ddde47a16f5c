"""Fixtures the end-to-end tests share."""

import pytest


@pytest.fixture
def registry_env(settings, tmp_path):
    """One blob store, keyring and content-key secret for the live server (this process) and the worker."""
    env = {
        "BLOB_STORE_ROOT": str(tmp_path / "blobs"),
        "MODEL_SIGNING_KEYRING_DIR": str(tmp_path / "signing-keys"),
        "PACKAGE_KEY_SECRET": "e2e-package-key-secret",
        "COMPRESSION_PROGRESS_INTERVAL_S": "0.1",
        "OMP_NUM_THREADS": "1",  # one torch thread: the test machine's cores are shared
    }
    settings.BLOB_STORE_ROOT = tmp_path / "blobs"
    settings.MODEL_SIGNING_KEYRING_DIR = tmp_path / "signing-keys"
    settings.PACKAGE_KEY_SECRET = env["PACKAGE_KEY_SECRET"]
    return env
