"""Model packages: building, encrypting and wrapping the content key for a fleet of devices.

The package is the shipped smart-park detector lowered to int8 (its real ``model.ir``, ``model.onnx``
and a four-frame ``selftest.npz``). Each row compares a step with its obvious alternative, measured in
the same process, interleaved round by round:

- per-device key wrapping (X25519 + HKDF-SHA256 + AES-GCM of the 32-byte content key) against
  encrypting the whole package once per device, which is what a fleet without key wrapping would do;
  the wraps per second say how long a deploy to 10,000 devices spends on keys;
- AES-256-GCM encryption of the package against SHA-256 of the same bytes (a cost storing it pays anyway);
- ``build_package`` (hashes, canonical manifest, Ed25519 signature, tar) against ``tarfile`` writing
  the same members unsigned;
- ``read_package`` (tar structure, signature, canonical manifest, hashes) against ``tarfile``
  extracting the same members unchecked.
"""

import hashlib
import io
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import TIMES, Options, Result, Table, Workload, compare, measure_rates

FLEET = 10_000


def _detector_package_parts() -> dict:
    import torch

    from compression.calibration import data_free_ranges
    from compression.lowering import lower
    from compression.onnx_export import export_onnx
    from model_store import reference
    from model_store.serialization import to_bytes
    from smartpark.detector import load_detector
    from smartpark.scenes import render_training_sample

    torch.set_num_threads(1)
    model = load_detector()
    integer_model = lower(model, (1, 3, 240, 320), data_free_ranges(model))
    frames = np.stack([render_training_sample(7_000_000 + i).image for i in range(4)]).transpose(0, 3, 1, 2)
    frames = np.ascontiguousarray(frames)
    outputs = reference.run(integer_model, frames)
    (input_name,) = integer_model.inputs
    return {
        "ir_bytes": to_bytes(integer_model),
        "onnx_bytes": export_onnx(integer_model),
        "selftest": {input_name: frames, **{name: outputs[name] for name in integer_model.outputs}},
    }


def _build(parts: dict, signing_key) -> bytes:
    from model_store.package import build_package

    return build_package(
        name="smartpark-detector",
        version=1,
        task="detection",
        labels=["vehicle", "person"],
        input_spec={"shape": [1, 3, 240, 320], "dtype": "uint8", "layout": "NCHW", "scale": 1 / 255},
        compression={"codebook": "int8"},
        runtimes=["reference", "cpu-int8"],
        min_agent_version="0.1.0",
        signing_key=signing_key,
        **parts,
    )


def _plain_tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _untar(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        return {member.name: archive.extractfile(member).read() for member in archive.getmembers()}


def run(options: Options) -> Result:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from model_store.crypto import Keyring, encrypt_package, wrap_content_key
    from model_store.package import read_package

    rounds = 3 if options.quick else 5
    fleet = 500 if options.quick else FLEET
    with tempfile.TemporaryDirectory() as keyring_dir:
        signing_key = Keyring(Path(keyring_dir)).active()
    trusted = {signing_key.key_id: signing_key.public_key}
    parts = _detector_package_parts()
    package = _build(parts, signing_key)
    members = _untar(package)
    plain = _plain_tar(members)
    ciphertext, content_key = encrypt_package(package)
    devices = [(f"device-{i:05d}", X25519PrivateKey.generate().public_key()) for i in range(fleet)]
    per_device_sample = devices[: max(20, fleet // 100)]
    megabytes = len(package) / 1e6

    def wrap_all() -> int:
        for device_id, public_key in devices:
            wrap_content_key(content_key, public_key, device_id)
        return len(devices)

    def encrypt_per_device() -> int:
        for _ in per_device_sample:
            encrypt_package(package)
        return len(per_device_sample)

    keys = measure_rates([Workload("wrap", wrap_all), Workload("encrypt", encrypt_per_device)], rounds)
    keys_row = compare(f"devices served per second ({fleet:,} devices)", keys, "wrap", "encrypt")
    keys_row.unit = "devices/s"

    crypto = measure_rates(
        [
            Workload("encrypt", lambda: (encrypt_package(package), 1)[1]),
            Workload("sha256", lambda: (hashlib.sha256(package).digest(), 1)[1]),
        ],
        rounds * 4,
    )
    encrypt_row = compare("package bytes per second", crypto, "encrypt", "sha256")
    encrypt_row.unit = "MB/s"
    for attribute in ("measured", "baseline"):
        setattr(encrypt_row, attribute, getattr(encrypt_row, attribute) * megabytes)

    building = measure_rates(
        [
            Workload("build", lambda: (_build(parts, signing_key), 1)[1]),
            Workload("tar", lambda: (_plain_tar(members), 1)[1]),
            Workload("read", lambda: (read_package(package, trusted), 1)[1]),
            Workload("untar", lambda: (_untar(plain), 1)[1]),
        ],
        rounds * 2,
    )
    build_row = compare("packages built per second", building, "build", "tar")
    build_row.unit = "packages/s"
    read_row = compare("packages read per second", building, "read", "untar")
    read_row.unit = "packages/s"

    wrap_s = fleet / keys_row.measured
    return Result(
        title="model packages: build, encrypt, wrap per device",
        description=__doc__.split("\n\n", 1)[1],
        tables=[
            Table(
                "wrap the content key per device",
                "encrypt the package per device",
                [keys_row],
                title="Serving one package to a fleet",
            ),
            Table("AES-256-GCM", "SHA-256 only", [encrypt_row], title="Encrypting the package"),
            Table(
                "signed and checked (model_store.package)",
                "plain tarfile",
                [build_row, read_row],
                title="Building and reading the package",
            ),
        ],
        notes=[
            f"The package is {len(package):,} bytes ({len(members['model.ir']):,} of model.ir, "
            f"{len(members['model.onnx']):,} of model.onnx, {len(members['selftest.npz']):,} of selftest.npz); "
            f"its ciphertext {len(ciphertext):,}.",
            f"Wrapping the content key for {fleet:,} devices takes {wrap_s:.1f} s on one core "
            f"({keys_row.measured:,.0f} wraps/s); encrypting the package per device instead would be "
            f"{keys_row.ratio:.0f}{TIMES} slower and store {fleet:,} ciphertexts.",
            "Reproduce with `.venv/bin/python -m benchmarks model_store` (part of `make bench`).",
        ],
        details={
            "package_bytes": len(package),
            "ciphertext_bytes": len(ciphertext),
            "members": {name: len(data) for name, data in members.items()},
            "fleet": fleet,
            "wrap_seconds_for_fleet": wrap_s,
        },
    )
