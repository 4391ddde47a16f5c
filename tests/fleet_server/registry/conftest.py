import io

import pytest
import torch

from fleet_server.registry import services
from smartpark.detector import DEFAULT_CHECKPOINT

LABELS = ["vehicle", "person"]


@pytest.fixture(autouse=True)
def registry_dirs(settings, tmp_path):
    """Every test gets its own blob store and signing keyring."""
    settings.BLOB_STORE_ROOT = tmp_path / "blobs"
    settings.MODEL_SIGNING_KEYRING_DIR = tmp_path / "signing-keys"
    settings.COMPRESSION_PROGRESS_INTERVAL_S = 0.0
    return settings


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Two threads on a machine shared with other work are many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    return services.create_family(tenant, "lot-detector", LABELS)


@pytest.fixture
def other_family(other_tenant):
    return services.create_family(other_tenant, "rival-detector", LABELS)


@pytest.fixture
def model_version(family, checkpoint_bytes):
    return services.register_version(family, io.BytesIO(checkpoint_bytes), filename="detector.pt")


# The smallest jobs that still run every phase: a few training steps on single frames.
TINY = {
    "int8": {"calibration_frames": 2, "eval_frames_per_condition": 0, "selftest_frames": 2},
    "data-free": {"eval_frames_per_condition": 0, "selftest_frames": 1},
    "3-bit": {
        "admm_steps": 3, "finetune_steps": 1, "batch_size": 1, "calibration_frames": 2,
        "eval_frames_per_condition": 0, "selftest_frames": 1,
    },
    "ternary-mixed": {
        "admm_steps": 3, "finetune_steps": 1, "batch_size": 1, "calibration_frames": 2,
        "eval_frames_per_condition": 0, "selftest_frames": 1,
    },
    "ternary-sensitive": {
        "admm_steps": 3, "finetune_steps": 1, "batch_size": 1, "calibration_frames": 2,
        "eval_frames_per_condition": 0, "selftest_frames": 1,
    },
    "3-bit-sparse": {
        "admm_steps": 2, "finetune_steps": 1, "pruning_steps": 2, "finetune_steps_per_pruning_step": 1,
        "batch_size": 1, "calibration_frames": 2, "eval_frames_per_condition": 0, "selftest_frames": 1,
    },
}  # fmt: skip
