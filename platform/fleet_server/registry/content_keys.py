"""Packages' content keys at rest: AES-256-GCM under a key derived from ``settings.PACKAGE_KEY_SECRET``.

The content key opens a package's ciphertext, so it is never stored in the clear: a database dump
alone does not decrypt the blob store. The sealing key is HKDF-SHA256 of the secret; the package's
ciphertext sha256 is the associated data, so a sealed key copied onto another package row does not
open. Format: ``v1:`` + base64(nonce || GCM output).
"""

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from model_store.crypto import CONTENT_KEY_BYTES, NONCE_BYTES, TAG_BYTES, CryptoError

SEAL_VERSION = "v1"
_INFO = b"smartpark fleet-server: package content keys at rest v1"


def _sealing_key() -> AESGCM:
    secret = settings.PACKAGE_KEY_SECRET
    if not secret:
        raise CryptoError("PACKAGE_KEY_SECRET (or SECRET_KEY) is empty: no key to seal package content keys with")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO)
    return AESGCM(hkdf.derive(secret.encode()))


def seal_content_key(content_key: bytes, package_sha256: str) -> str:
    if len(content_key) != CONTENT_KEY_BYTES:
        raise CryptoError(f"content key must be {CONTENT_KEY_BYTES} bytes, got {len(content_key)}")
    nonce = secrets.token_bytes(NONCE_BYTES)
    sealed = _sealing_key().encrypt(nonce, content_key, package_sha256.encode())
    return f"{SEAL_VERSION}:{base64.b64encode(nonce + sealed).decode()}"


def open_content_key(sealed: str, package_sha256: str) -> bytes:
    """The content key of the package whose ciphertext has this sha256; CryptoError if it does not open."""
    version, _, encoded = sealed.partition(":")
    if version != SEAL_VERSION:
        raise CryptoError(f"sealed content key has format {version!r}, expected {SEAL_VERSION!r}")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("sealed content key is not valid base64") from None
    if len(raw) != NONCE_BYTES + CONTENT_KEY_BYTES + TAG_BYTES:
        raise CryptoError(
            f"sealed content key is {len(raw)} bytes, expected {NONCE_BYTES + CONTENT_KEY_BYTES + TAG_BYTES}"
        )
    try:
        return _sealing_key().decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], package_sha256.encode())
    except InvalidTag:
        raise CryptoError(
            "sealed content key does not open: PACKAGE_KEY_SECRET changed since the package was built, "
            "or the key belongs to another package"
        ) from None
