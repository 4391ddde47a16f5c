"""Package cryptography: AES-256-GCM package encryption, per-device content-key wrapping, Ed25519 signing keys.

Every primitive comes from the `cryptography` library; the byte layouts are described in docs/package-format.md.
"""

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

CONTENT_KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
X25519_KEY_BYTES = 32
ED25519_KEY_BYTES = 32
SIGNATURE_BYTES = 64

# Encrypted package: magic, format version (u8), then the nonce and the GCM output (ciphertext + tag).
CIPHERTEXT_MAGIC = b"SPEP"
CIPHERTEXT_VERSION = 1
CIPHERTEXT_HEADER = struct.pack("<4sB", CIPHERTEXT_MAGIC, CIPHERTEXT_VERSION)

# Wrapped content key: version (u8), ephemeral X25519 public key, nonce, GCM output of the 32-byte content key.
WRAP_VERSION = 1
WRAP_INFO = b"smartpark model-package content-key wrap v1"
WRAPPED_KEY_BYTES = 1 + X25519_KEY_BYTES + NONCE_BYTES + CONTENT_KEY_BYTES + TAG_BYTES

KEY_ID_HEX = 16
_KEY_ID = re.compile(rf"[0-9a-f]{{{KEY_ID_HEX}}}")


class CryptoError(ValueError):
    """A cryptographic check failed or a key is unusable; the message names which."""


def encrypt_package(plaintext: bytes) -> tuple[bytes, bytes]:
    """Encrypt a package under a fresh random content key: returns (ciphertext, content_key)."""
    content_key = AESGCM.generate_key(bit_length=8 * CONTENT_KEY_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = AESGCM(content_key).encrypt(nonce, bytes(plaintext), CIPHERTEXT_HEADER)
    return CIPHERTEXT_HEADER + nonce + sealed, content_key


def decrypt_package(ciphertext: bytes, content_key: bytes) -> bytes:
    """Open `encrypt_package` output; any tampering, truncation or a wrong key raises CryptoError."""
    _check_content_key(content_key)
    ciphertext = bytes(ciphertext)
    minimum = len(CIPHERTEXT_HEADER) + NONCE_BYTES + TAG_BYTES
    if len(ciphertext) < minimum:
        raise CryptoError(f"package ciphertext truncated: {len(ciphertext)} bytes, at least {minimum} expected")
    header = ciphertext[: len(CIPHERTEXT_HEADER)]
    if header[:4] != CIPHERTEXT_MAGIC:
        raise CryptoError(f"package ciphertext: magic {header[:4]!r} is not {CIPHERTEXT_MAGIC!r}")
    if header[4] != CIPHERTEXT_VERSION:
        raise CryptoError(f"package ciphertext: format version {header[4]} is not supported ({CIPHERTEXT_VERSION})")
    nonce = ciphertext[len(header) : len(header) + NONCE_BYTES]
    try:
        return AESGCM(content_key).decrypt(nonce, ciphertext[len(header) + NONCE_BYTES :], header)
    except InvalidTag:
        raise CryptoError(
            "package ciphertext: authentication failed (tampered or truncated ciphertext, or the wrong content key)"
        ) from None


def wrap_content_key(content_key: bytes, device_public_key: X25519PublicKey | bytes | str, device_id: str) -> bytes:
    """Wrap a content key so that only the device holding the X25519 private key, under this device id, opens it."""
    _check_content_key(content_key)
    device_public = _x25519_public_key(device_public_key)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_raw = _raw_public(ephemeral.public_key())
    try:
        shared = ephemeral.exchange(device_public)
    except ValueError:
        raise CryptoError("device public key is not usable for X25519 (low-order point)") from None
    key_encryption_key = _derive_wrap_key(shared, ephemeral_raw, _raw_public(device_public))
    nonce = secrets.token_bytes(NONCE_BYTES)
    version = bytes([WRAP_VERSION])
    sealed = AESGCM(key_encryption_key).encrypt(nonce, content_key, version + _device_id_bytes(device_id))
    return version + ephemeral_raw + nonce + sealed


def unwrap_content_key(wrapped: bytes, device_private_key: X25519PrivateKey, device_id: str) -> bytes:
    """Recover the content key from `wrap_content_key` output; a key wrapped for anyone else raises CryptoError."""
    if not isinstance(device_private_key, X25519PrivateKey):
        raise CryptoError(f"device private key must be an X25519PrivateKey, got {type(device_private_key).__name__}")
    wrapped = bytes(wrapped)
    if len(wrapped) != WRAPPED_KEY_BYTES:
        raise CryptoError(f"wrapped content key: {len(wrapped)} bytes, expected {WRAPPED_KEY_BYTES}")
    if wrapped[0] != WRAP_VERSION:
        raise CryptoError(f"wrapped content key: format version {wrapped[0]} is not supported ({WRAP_VERSION})")
    ephemeral_raw = wrapped[1 : 1 + X25519_KEY_BYTES]
    nonce = wrapped[1 + X25519_KEY_BYTES : 1 + X25519_KEY_BYTES + NONCE_BYTES]
    try:
        shared = device_private_key.exchange(X25519PublicKey.from_public_bytes(ephemeral_raw))
    except ValueError:
        raise CryptoError("wrapped content key: the ephemeral public key is not usable (low-order point)") from None
    key_encryption_key = _derive_wrap_key(shared, ephemeral_raw, _raw_public(device_private_key.public_key()))
    try:
        return AESGCM(key_encryption_key).decrypt(
            nonce, wrapped[1 + X25519_KEY_BYTES + NONCE_BYTES :], wrapped[:1] + _device_id_bytes(device_id)
        )
    except InvalidTag:
        raise CryptoError(
            "wrapped content key: authentication failed (wrapped for another device or device id, or tampered)"
        ) from None


def _derive_wrap_key(shared_secret: bytes, ephemeral_raw: bytes, device_raw: bytes) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=CONTENT_KEY_BYTES, salt=ephemeral_raw + device_raw, info=WRAP_INFO)
    return hkdf.derive(shared_secret)


def _check_content_key(content_key) -> None:
    if not isinstance(content_key, bytes) or len(content_key) != CONTENT_KEY_BYTES:
        length = len(content_key) if isinstance(content_key, bytes) else type(content_key).__name__
        raise CryptoError(f"content key must be {CONTENT_KEY_BYTES} bytes, got {length}")


def _device_id_bytes(device_id) -> bytes:
    if not isinstance(device_id, str) or not device_id:
        raise CryptoError(f"device id must be a non-empty string, got {device_id!r}")
    return device_id.encode()


def _x25519_public_key(key: X25519PublicKey | bytes | str) -> X25519PublicKey:
    if isinstance(key, X25519PublicKey):
        return key
    if isinstance(key, str):
        try:
            key = base64.b64decode(key, validate=True)
        except (binascii.Error, ValueError):
            raise CryptoError("device public key is not valid base64") from None
    if not isinstance(key, bytes) or len(key) != X25519_KEY_BYTES:
        raise CryptoError(f"device public key must be {X25519_KEY_BYTES} raw X25519 bytes (or their base64)")
    return X25519PublicKey.from_public_bytes(key)


def _raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A signing key's id: the first 16 hex digits of the sha256 of its raw public key."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:KEY_ID_HEX]


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and its id (checked to belong to the key)."""

    key_id: str
    private_key: Ed25519PrivateKey

    def __post_init__(self):
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise CryptoError(f"a signing key is Ed25519, got {type(self.private_key).__name__}")
        if self.key_id != key_id_of(self.private_key.public_key()):
            raise CryptoError(f"signing key id {self.key_id!r} does not belong to its key")

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls.from_private_key(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_key(cls, private_key: Ed25519PrivateKey) -> "SigningKey":
        return cls(key_id_of(private_key.public_key()), private_key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()


def sign(data: bytes, key: SigningKey) -> bytes:
    """An Ed25519 signature (64 bytes) of `data`."""
    return key.private_key.sign(bytes(data))


def verify(data: bytes, signature: bytes, public_key: Ed25519PublicKey) -> None:
    """Raise CryptoError unless `signature` is `public_key`'s signature of `data`."""
    if not isinstance(public_key, Ed25519PublicKey):
        raise CryptoError(f"a verification key is an Ed25519PublicKey, got {type(public_key).__name__}")
    try:
        public_key.verify(bytes(signature), bytes(data))
    except InvalidSignature:
        raise CryptoError(f"signature does not verify with key {key_id_of(public_key)}") from None


def import_public_keys(exported: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    """Load `Keyring.export_public()` output (what a device pins), checking each id belongs to its key."""
    keys = {}
    for key_id, encoded in exported.items():
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise CryptoError(f"signing public key {key_id!r} is not valid base64") from None
        if len(raw) != ED25519_KEY_BYTES:
            raise CryptoError(f"signing public key {key_id!r} is {len(raw)} bytes, expected {ED25519_KEY_BYTES}")
        public_key = Ed25519PublicKey.from_public_bytes(raw)
        if key_id_of(public_key) != key_id:
            raise CryptoError(f"signing public key {key_id!r} has id {key_id_of(public_key)}: the id does not match")
        keys[key_id] = public_key
    return keys


class Keyring:
    """The platform's Ed25519 signing keys in a directory: one active key, older ones kept until retired.

    Files: `keyring.json` ({"active": id, "retired": [ids]}), one `<key_id>.pem` (PKCS#8, mode 0600) per unretired
    key, and `.lock` serializing changes between processes. A rotated-out key still verifies (devices may hold
    packages it signed) until it is retired; retiring deletes its private key file.
    """

    STATE_FILE = "keyring.json"
    LOCK_FILE = ".lock"

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    @classmethod
    def create(cls, directory: str | os.PathLike) -> "Keyring":
        """Open the keyring in `directory`, creating the directory (mode 0700) and a first active key if missing."""
        keyring = cls(directory)
        keyring.active()
        return keyring

    def active(self) -> SigningKey:
        """The key that signs new packages; the first call on an empty keyring creates it."""
        state = self._read_state()
        if state["active"] is None:
            with self._locked():
                state = self._read_state()
                if state["active"] is None:
                    state["active"] = self._new_key().key_id
                    self._write_state(state)
        return self._load(state["active"])

    def rotate(self) -> SigningKey:
        """Make a new key active; the previous keys keep verifying until retired."""
        with self._locked():
            state = self._read_state()
            key = self._new_key()
            state["active"] = key.key_id
            self._write_state(state)
        return key

    def retire(self, key_id: str) -> None:
        """Stop trusting `key_id` and delete its private key; the active key cannot be retired (rotate first)."""
        with self._locked():
            state = self._read_state()
            if key_id in state["retired"]:
                return
            if key_id == state["active"]:
                raise CryptoError(f"signing key {key_id} is the active key: rotate to a new key before retiring it")
            path = self._key_path(key_id)
            if not path.exists():
                raise CryptoError(f"signing key {key_id} is not in the keyring at {self.directory}")
            state["retired"].append(key_id)
            self._write_state(state)
            path.unlink()

    def get(self, key_id: str) -> SigningKey:
        """An unretired key by id."""
        if key_id in self._read_state()["retired"]:
            raise CryptoError(f"signing key {key_id} is retired")
        return self._load(key_id)

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The public keys of every unretired key, by id: what devices pin to verify packages."""
        retired = set(self._read_state()["retired"])
        return {key_id: self._load(key_id).public_key for key_id in self._key_ids() if key_id not in retired}

    def export_public(self) -> dict[str, str]:
        """`public_keys()` as base64 of the raw 32-byte keys, for JSON (load it back with `import_public_keys`)."""
        return {key_id: base64.b64encode(_raw_public(key)).decode() for key_id, key in self.public_keys().items()}

    def _key_ids(self) -> Iterator[str]:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*.pem")):
            if _KEY_ID.fullmatch(path.stem):
                yield path.stem

    def _key_path(self, key_id: str) -> Path:
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise CryptoError(f"signing key id must be {KEY_ID_HEX} lowercase hex digits, got {key_id!r}")
        return self.directory / f"{key_id}.pem"

    def _load(self, key_id: str) -> SigningKey:
        path = self._key_path(key_id)
        try:
            private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise CryptoError(f"signing key {key_id} is not in the keyring at {self.directory}") from None
        except ValueError as error:
            raise CryptoError(f"signing key file {path} is not a readable PEM private key: {error}") from None
        if not isinstance(private_key, Ed25519PrivateKey):
            raise CryptoError(f"signing key file {path} does not hold an Ed25519 key")
        if key_id_of(private_key.public_key()) != key_id:
            raise CryptoError(f"signing key file {path} holds key {key_id_of(private_key.public_key())}, not {key_id}")
        return SigningKey(key_id, private_key)

    def _new_key(self) -> SigningKey:
        key = SigningKey.generate()
        pem = key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private_atomically(self._key_path(key.key_id), pem)
        return key

    def _read_state(self) -> dict:
        path = self.directory / self.STATE_FILE
        try:
            state = json.loads(path.read_bytes())
        except FileNotFoundError:
            return {"active": None, "retired": []}
        except ValueError as error:
            raise CryptoError(f"keyring state {path} is not valid JSON: {error}") from None
        if not (
            isinstance(state, dict)
            and (state.get("active") is None or isinstance(state.get("active"), str))
            and isinstance(state.get("retired"), list)
            and all(isinstance(key_id, str) for key_id in state["retired"])
        ):
            raise CryptoError(f"keyring state {path} must be {{'active': key id, 'retired': [key ids]}}")
        return {"active": state["active"], "retired": list(state["retired"])}

    def _write_state(self, state: dict) -> None:
        _write_private_atomically(self.directory / self.STATE_FILE, json.dumps(state, indent=2).encode())

    @contextlib.contextmanager
    def _locked(self):
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(self.directory / self.LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)


def _write_private_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename, mode 0600 from the first byte, durable once this returns."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
