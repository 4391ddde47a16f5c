"""Real, signed packages of a small integer model for the update tests (built here, never by the driver)."""

import numpy as np

from compression.onnx_export import export_onnx
from model_store import reference
from model_store.crypto import Keyring
from model_store.package import build_package
from model_store.serialization import to_bytes
from tests.edge_agent.update.helpers import MODEL
from tests.model_store.synthetic import small_model


def package_tar(keyring: Keyring, version: int, *, seed: int = 3, corrupt_selftest: bool = False) -> bytes:
    """A signed package of a small integer model; `corrupt_selftest` shifts the expected outputs (still signed)."""
    model = small_model(np.random.default_rng(seed))
    frames = np.random.default_rng(seed + 100).integers(0, 256, size=(2, 3, 8, 12), dtype=np.uint8)
    outputs = reference.run(model, frames)
    if corrupt_selftest:
        outputs = {name: (codes.astype(np.int32) + 9).clip(0, 255).astype(np.uint8) for name, codes in outputs.items()}
    spec = model.tensors["image"]
    return build_package(
        name=MODEL,
        version=version,
        task="detection",
        labels=["car", "person"],
        input_spec={"shape": [1, 3, 8, 12], "dtype": "uint8", "layout": "NCHW", "scale": spec.quant.scale},
        ir_bytes=to_bytes(model),
        onnx_bytes=export_onnx(model),
        selftest={"image": frames, **outputs},
        compression={"codebook": "pow2-4"},
        runtimes=["reference", "cpu-int8"],
        min_agent_version="0.1.0",
        signing_key=keyring.active(),
    )
