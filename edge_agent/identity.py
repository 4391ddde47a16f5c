"""The device's identity: who it is, where its broker is, its credentials and its own X25519 key."""

import base64
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.files import ensure_private_dir, read_json, write_private, write_private_json

IDENTITY_FILE = "identity.json"
KEY_FILE = "device_key.pem"


def default_state_dir() -> Path:
    if env := os.environ.get("EDGE_AGENT_STATE_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/edge-agent")
    return Path.home() / ".local" / "state" / "edge-agent"


class NotEnrolled(Exception):
    pass


@dataclass(frozen=True)
class DeviceIdentity:
    device_id: str
    name: str
    kind: str
    site: str
    server_url: str
    mqtt_url: str
    mqtt_username: str
    mqtt_password: str
    mqtt_client_id: str
    keepalive_s: int
    telemetry_interval_s: float
    enrolled_at: float
    # The platform's package-signing public keys pinned at enrollment ({key_id: base64 raw Ed25519}),
    # for model_store.crypto.import_public_keys. Identity files written before pinning have none.
    signing_keys: dict[str, str] = field(default_factory=dict)

    def save(self, state_dir: Path) -> None:
        ensure_private_dir(state_dir)
        write_private_json(state_dir / IDENTITY_FILE, asdict(self))

    @classmethod
    def load(cls, state_dir: Path) -> "DeviceIdentity":
        data = read_json(state_dir / IDENTITY_FILE)
        if data is None:
            raise NotEnrolled(f"no identity in {state_dir}: run `edge-agent enroll --server URL --token T` first")
        return cls(**data)


def generate_device_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_key_b64(key: X25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def save_device_key(state_dir: Path, key: X25519PrivateKey) -> None:
    ensure_private_dir(state_dir)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private(state_dir / KEY_FILE, pem)


def load_device_key(state_dir: Path) -> X25519PrivateKey:
    key = serialization.load_pem_private_key((state_dir / KEY_FILE).read_bytes(), password=None)
    if not isinstance(key, X25519PrivateKey):
        raise ValueError(f"{state_dir / KEY_FILE} is not an X25519 private key")
    return key
