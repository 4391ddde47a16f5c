"""Real, signed model packages for the runtime tests: small synthetic IR models, their ONNX export, a keyring."""

import numpy as np
import pytest

from compression.onnx_export import export_onnx
from model_store import reference
from model_store.crypto import Keyring
from model_store.ir import Model
from model_store.package import Package, build_package, read_package
from model_store.serialization import to_bytes
from tests.model_store.synthetic import detector_like_model

INPUT_SIZE = (64, 96)
SELFTEST_FRAMES = 6


def detector_model(seed: int) -> Model:
    """The detector's graph at a small input size, with synthetic pow2-4 codes (int8 first and last layers)."""
    return detector_like_model(np.random.default_rng(seed), size=INPUT_SIZE)


def selftest_frames(model: Model, seed: int = 11) -> np.ndarray:
    """Rendered-scene-like frames are not needed for a numerical check: uniform noise exercises every code."""
    shape = model.tensors[model.inputs[0]].shape
    return np.random.default_rng(seed).integers(0, 256, size=(SELFTEST_FRAMES, *shape), dtype=np.uint8)


def package_bytes(
    keyring: Keyring, model: Model, onnx_model: Model | None = None, selftest: dict | None = None, version: int = 1
) -> bytes:
    """A signed package of `model`, whose model.onnx is exported from `onnx_model` (default: the same model).

    `selftest` replaces the self-test arrays (default: frames and the reference outputs for them).
    """
    (input_name,) = model.inputs
    spec = model.tensors[input_name]
    if selftest is None:
        frames = selftest_frames(model)
        selftest = {input_name: frames, **reference.run(model, frames)}
    return build_package(
        name="park-detector",
        version=version,
        task="detection",
        labels=["car"],
        input_spec={"shape": [1, *spec.shape], "dtype": "uint8", "layout": "NCHW", "scale": spec.quant.scale},
        ir_bytes=to_bytes(model),
        onnx_bytes=export_onnx(onnx_model or model),
        selftest=selftest,
        compression={"codebook": "pow2-4"},
        runtimes=["reference", "cpu-int8"],
        min_agent_version="0.1.0",
        signing_key=keyring.active(),
    )


@pytest.fixture(scope="session")
def keyring(tmp_path_factory) -> Keyring:
    return Keyring.create(tmp_path_factory.mktemp("keyring"))


@pytest.fixture(scope="session")
def trusted(keyring):
    key = keyring.active()
    return {key.key_id: key.public_key}


@pytest.fixture(scope="session")
def model() -> Model:
    return detector_model(3)


@pytest.fixture(scope="session")
def package(keyring, trusted, model) -> Package:
    return read_package(package_bytes(keyring, model), trusted)


@pytest.fixture(scope="session")
def mismatched_package(keyring, trusted, model) -> Package:
    """Validly signed, but its model.onnx is another model with the same graph (different weights)."""
    return read_package(package_bytes(keyring, model, onnx_model=detector_model(5)), trusted)
