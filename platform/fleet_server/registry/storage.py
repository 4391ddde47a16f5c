"""Where the registry keeps its bytes and its signing keys, as configured in settings."""

from django.conf import settings

from model_store.crypto import Keyring
from model_store.storage import FileSystemBlobStore


def blob_store() -> FileSystemBlobStore:
    """The content-addressed store of uploaded checkpoints and encrypted packages."""
    return FileSystemBlobStore(settings.BLOB_STORE_ROOT)


def signing_keyring() -> Keyring:
    return Keyring(settings.MODEL_SIGNING_KEYRING_DIR)
