"""Packages for rollout tests: real encrypted blobs with sealed content keys, built without a compression job."""

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fleet_server.devices.models import Device
from fleet_server.devices.services import mosquitto_password_hash
from fleet_server.registry import services as registry
from fleet_server.registry.content_keys import seal_content_key
from fleet_server.registry.models import ModelVersion, Package
from fleet_server.registry.storage import blob_store, signing_keyring
from model_store.crypto import encrypt_package

LABELS = ["vehicle", "person"]


@pytest.fixture(autouse=True)
def registry_dirs(settings, tmp_path):
    """Every test gets its own blob store and signing keyring."""
    settings.BLOB_STORE_ROOT = tmp_path / "blobs"
    settings.MODEL_SIGNING_KEYRING_DIR = tmp_path / "signing-keys"
    return settings


def make_package(tenant, name="lot-detector", *, runtimes=("reference", "cpu-int8")) -> Package:
    """A package row whose ciphertext is in the blob store and whose content key opens it.

    The plaintext is not a real package tar: deploying only moves the ciphertext and wraps its key.
    """
    family = registry.create_family(tenant, name, LABELS)
    version = ModelVersion.objects.create(
        family=family, version=1, blob_sha256="0" * 64, size_bytes=1, input_shape=[1, 3, 240, 320],
        parameters=1, fp32_bytes=4,
    )  # fmt: skip
    plaintext = f"package {name}".encode() * 1000
    ciphertext, content_key = encrypt_package(plaintext)
    digest = blob_store().put_bytes(ciphertext)
    return Package.objects.create(
        model_version=version, family=family, version=1, runtimes=list(runtimes), codebook="int8",
        blob_sha256=digest, size_bytes=len(ciphertext), plaintext_sha256=hashlib.sha256(plaintext).hexdigest(),
        sealed_content_key=seal_content_key(content_key, digest), signer_key_id=signing_keyring().active().key_id,
        compression_ratio=4.0, model_bytes=100, fp32_bytes=400,
    )  # fmt: skip


@pytest.fixture
def package(tenant):
    return make_package(tenant)


@pytest.fixture
def rival_package(other_tenant):
    return make_package(other_tenant, "rival-detector")


def keyed_device(site, name: str, **fields) -> tuple[Device, X25519PrivateKey]:
    """A device whose private X25519 key the test holds, as an enrolled agent would."""
    key = X25519PrivateKey.generate()
    public = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    device = Device.objects.create(
        name=name, kind="smart_box_cpu", site=site, public_key=public, mqtt_username=f"user-{name}-{site.slug}",
        mqtt_password_hash=mosquitto_password_hash("x"), **fields,
    )  # fmt: skip
    return device, key


@pytest.fixture
def boxes(site):
    """Two devices of the tenant's park with their private keys."""
    return [keyed_device(site, "box-a", runtimes=["cpu-int8"]), keyed_device(site, "box-b")]
