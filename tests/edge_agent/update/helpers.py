"""Ciphertexts and deploy commands for the update tests, a real Updater over files, and the pipeline's side.

The ciphertext is model_store.crypto's, the content key wrapped for a generated X25519 device key; the packages
come from tests/edge_agent/update/packages.py. Everything goes through files, like on a device. Light imports
only (no onnx): the crash-test driver imports this in each of its processes.
"""

import base64
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

import fleet_protocol as fp
from edge_agent.update import Updater
from model_store.crypto import Keyring, encrypt_package, wrap_content_key
from smartpark.geometry import SceneConfig, Zone, ZoneKind

MODEL = "park-detector"
DEVICE_ID = "dev-0001"
AGENT_VERSION = "0.1.0"


def device_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def private_key_pem(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def scene(camera: str = "cam-1", spaces: int = 1, version: int = 1) -> dict:
    """A valid scene config (SceneConfig.to_dict()) with `spaces` parking spaces."""
    zones = tuple(
        Zone(
            f"space-{i}",
            ZoneKind.PARKING_SPACE,
            ((10 + 40 * i, 10), (40 + 40 * i, 10), (40 + 40 * i, 60), (10 + 40 * i, 60)),
        )
        for i in range(spaces)
    )
    return SceneConfig(camera=camera, width=640, height=480, zones=zones, version=version).to_dict()


@dataclass
class Deploy:
    """A deploy command and the ciphertext file its blob is."""

    command: fp.DeployCommand
    blob: Path


def make_deploy(
    directory: Path,
    tar: bytes,
    public_key,
    version: int,
    *,
    command_id: str | None = None,
    device_id: str = DEVICE_ID,
    observe_s: float | None = 0.2,
    scene_configs: list[dict] = (),
    tamper: bool = False,
) -> Deploy:
    """Encrypt `tar`, store the ciphertext in `directory`, wrap its key for `public_key`; `tamper` flips a byte
    of the stored ciphertext after its sha256 went into the command."""
    ciphertext, content_key = encrypt_package(tar)
    command = fp.DeployCommand(
        command_id=command_id or f"deploy-v{version}",
        model=MODEL,
        version=version,
        blob_sha256=hashlib.sha256(ciphertext).hexdigest(),
        blob_size=len(ciphertext),
        chunk_size=1024,
        wrapped_key=base64.b64encode(wrap_content_key(content_key, public_key, device_id)).decode(),
        scene_configs=list(scene_configs),
        observe_s=observe_s,
    )
    if tamper:
        ciphertext = ciphertext[:100] + bytes([ciphertext[100] ^ 1]) + ciphertext[101:]
    directory.mkdir(parents=True, exist_ok=True)
    blob = directory / f"{command.command_id}.blob"
    blob.write_bytes(ciphertext)
    return Deploy(command, blob)


def copying_fetch(blobs: dict[str, Path], downloads: Path):
    """A fetch that 'downloads' a command's ciphertext by copying its file in 1 KiB steps, reporting progress."""

    def fetch(command: fp.DeployCommand, progress) -> Path:
        downloads.mkdir(parents=True, exist_ok=True)
        target = downloads / command.blob_sha256
        data = blobs[command.command_id].read_bytes()
        with target.open("wb") as out:
            for start in range(0, len(data), command.chunk_size):
                out.write(data[start : start + command.chunk_size])
                progress(min(start + command.chunk_size, len(data)), len(data))
        return target

    return fetch


@dataclass
class Pipeline:
    """What the agent's camera pipeline exposes to the updater: activate() and health() counters."""

    fps: float = 10.0
    errors_per_sample: int = 0
    frames: int = 0
    errors: int = 0
    activated: list = field(default_factory=list)

    def activate(self, model) -> None:
        self.activated.append(model)

    def health(self) -> dict:
        self.frames += 5
        self.errors += self.errors_per_sample
        return {"fps": self.fps, "errors": self.errors, "frames": self.frames, "detections": self.frames // 2}


def make_updater(
    state_dir: Path, keyring: Keyring, key: X25519PrivateKey, blobs: dict, pipeline: Pipeline, acks: list, **options
):
    trusted = {k.key_id: k.public_key for k in [keyring.active()]}
    options.setdefault("default_observe_s", 0.2)
    return Updater(
        state_dir,
        device_id=options.pop("device_id", DEVICE_ID),
        device_private_key=key,
        trusted_keys=trusted,
        agent_version=AGENT_VERSION,
        fetch=copying_fetch(blobs, state_dir.parent / "downloads"),
        report=options.pop("report", acks.append),
        activate=pipeline.activate,
        health=pipeline.health,
        preferred_runtimes=["reference"],
        observe_poll_s=0.05,
        **options,
    )


def write_ack(path: Path):
    """A report callback that appends each ack as a JSON line (for the driver subprocess)."""

    def report(ack: fp.CommandAckBody) -> None:
        with path.open("a") as out:
            out.write(json.dumps(msgspec.to_builtins(ack)) + "\n")

    return report


def read_acks(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, symlinks=True)
