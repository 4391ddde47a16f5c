import io

import pytest
import torch

from smartpark.detector import DEFAULT_CHECKPOINT

LABELS = ["vehicle", "person"]


@pytest.fixture(autouse=True)
def registry_dirs(settings, tmp_path):
    """Every test gets its own blob store and signing keyring."""
    settings.BLOB_STORE_ROOT = tmp_path / "blobs"
    settings.MODEL_SIGNING_KEYRING_DIR = tmp_path / "signing-keys"
    settings.COMPRESSION_PROGRESS_INTERVAL_S = 0.0
    return settings


@pytest.fixture(scope="session")
def checkpoint_bytes() -> bytes:
    return DEFAULT_CHECKPOINT.read_bytes()


def torch_file(payload) -> io.BytesIO:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    buffer.seek(0)
    return buffer


@pytest.fixture
def family(tenant):
    from fleet_server.registry import services

    return services.create_family(tenant, "lot-detector", LABELS)


@pytest.fixture
def other_family(other_tenant):
    from fleet_server.registry import services

    return services.create_family(other_tenant, "rival-detector", LABELS)


@pytest.fixture
def model_version(family, checkpoint_bytes):
    from fleet_server.registry import services

    return services.register_version(family, io.BytesIO(checkpoint_bytes), filename="detector.pt")
