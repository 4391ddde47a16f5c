import os

import pytest

from fleet_server.registry.content_keys import open_content_key, seal_content_key
from model_store.crypto import CryptoError

DIGEST = "ab" * 32


def test_a_sealed_key_opens_for_its_package_only(settings):
    key = os.urandom(32)
    sealed = seal_content_key(key, DIGEST)
    assert key.hex() not in sealed and sealed.startswith("v1:")
    assert open_content_key(sealed, DIGEST) == key
    with pytest.raises(CryptoError, match="does not open"):
        open_content_key(sealed, "cd" * 32)


def test_a_changed_secret_is_reported(settings):
    sealed = seal_content_key(os.urandom(32), DIGEST)
    settings.PACKAGE_KEY_SECRET = "another secret"
    with pytest.raises(CryptoError, match="PACKAGE_KEY_SECRET changed"):
        open_content_key(sealed, DIGEST)


@pytest.mark.parametrize("sealed", ["v2:AAAA", "v1:not base64!", "v1:" + "A" * 8])
def test_malformed_sealed_keys_are_refused(sealed):
    with pytest.raises(CryptoError):
        open_content_key(sealed, DIGEST)
