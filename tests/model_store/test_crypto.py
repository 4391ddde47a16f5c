import base64
import hashlib
import json
import stat
import threading

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.identity import load_device_key, public_key_b64, save_device_key
from model_store.crypto import (
    CIPHERTEXT_HEADER,
    CONTENT_KEY_BYTES,
    NONCE_BYTES,
    TAG_BYTES,
    WRAPPED_KEY_BYTES,
    CryptoError,
    Keyring,
    SigningKey,
    decrypt_package,
    encrypt_package,
    import_public_keys,
    key_id_of,
    sign,
    unwrap_content_key,
    verify,
    wrap_content_key,
)

PLAINTEXT = bytes(range(256)) * 3


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_encrypt_package_round_trips_under_a_fresh_key_and_nonce_each_time():
    ciphertext, content_key = encrypt_package(PLAINTEXT)
    again, other_key = encrypt_package(PLAINTEXT)

    assert decrypt_package(ciphertext, content_key) == PLAINTEXT
    assert len(content_key) == CONTENT_KEY_BYTES and content_key != other_key
    assert ciphertext != again and ciphertext[len(CIPHERTEXT_HEADER) :] != again[len(CIPHERTEXT_HEADER) :]
    assert len(ciphertext) == len(CIPHERTEXT_HEADER) + NONCE_BYTES + len(PLAINTEXT) + TAG_BYTES
    assert ciphertext.startswith(CIPHERTEXT_HEADER)
    assert PLAINTEXT[:64] not in ciphertext


def test_encrypt_package_handles_an_empty_package():
    ciphertext, content_key = encrypt_package(b"")
    assert decrypt_package(ciphertext, content_key) == b""


def test_every_flipped_ciphertext_byte_is_refused_with_the_part_that_failed():
    ciphertext, content_key = encrypt_package(PLAINTEXT[:100])
    for offset in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[offset] ^= 0x01
        with pytest.raises(CryptoError) as refused:
            decrypt_package(bytes(tampered), content_key)
        if offset < 4:
            assert "magic" in str(refused.value)
        elif offset == 4:
            assert "format version" in str(refused.value)
        else:
            assert "authentication failed" in str(refused.value)


def test_truncated_or_extended_ciphertext_is_refused():
    ciphertext, content_key = encrypt_package(PLAINTEXT[:40])
    for length in range(len(ciphertext)):
        with pytest.raises(CryptoError, match=r"truncated|authentication failed"):
            decrypt_package(ciphertext[:length], content_key)
    with pytest.raises(CryptoError, match="authentication failed"):
        decrypt_package(ciphertext + b"\0", content_key)


def test_decrypt_package_refuses_a_wrong_or_malformed_content_key():
    ciphertext, content_key = encrypt_package(PLAINTEXT)
    wrong = bytes(CONTENT_KEY_BYTES)
    with pytest.raises(CryptoError, match="authentication failed"):
        decrypt_package(ciphertext, wrong)
    with pytest.raises(CryptoError, match="content key must be 32 bytes, got 16"):
        decrypt_package(ciphertext, content_key[:16])
    with pytest.raises(CryptoError, match="content key must be 32 bytes, got str"):
        decrypt_package(ciphertext, "k" * 32)


def test_wrapped_content_key_opens_on_the_device_it_was_wrapped_for():
    device = X25519PrivateKey.generate()
    _, content_key = encrypt_package(PLAINTEXT)

    for public_form in (device.public_key(), public_key_b64(device), base64.b64decode(public_key_b64(device))):
        wrapped = wrap_content_key(content_key, public_form, "device-a")
        assert len(wrapped) == WRAPPED_KEY_BYTES
        assert unwrap_content_key(wrapped, device, "device-a") == content_key


def test_a_device_key_saved_by_the_agent_opens_a_key_wrapped_to_its_registered_public_key(tmp_path):
    # given the agent's own key file and the base64 public key the platform stores at enrollment
    save_device_key(tmp_path, X25519PrivateKey.generate())
    registered_public_key = public_key_b64(load_device_key(tmp_path))
    ciphertext, content_key = encrypt_package(PLAINTEXT)

    # when the platform wraps for that device
    wrapped = wrap_content_key(content_key, registered_public_key, "7d0c2f2e-device")

    # then the device opens the package with the key it loads from disk
    opened_key = unwrap_content_key(wrapped, load_device_key(tmp_path), "7d0c2f2e-device")
    assert decrypt_package(ciphertext, opened_key) == PLAINTEXT


def test_wrapping_twice_gives_unrelated_outputs():
    device = X25519PrivateKey.generate()
    content_key = bytes(range(32))
    first = wrap_content_key(content_key, device.public_key(), "device-a")
    second = wrap_content_key(content_key, device.public_key(), "device-a")
    assert first[1:33] != second[1:33]
    assert first[45:] != second[45:]


def test_a_key_wrapped_for_one_device_opens_on_no_other_device_or_device_id():
    device_a, device_b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    wrapped = wrap_content_key(bytes(range(32)), device_a.public_key(), "device-a")

    with pytest.raises(CryptoError, match="authentication failed"):
        unwrap_content_key(wrapped, device_b, "device-a")
    with pytest.raises(CryptoError, match="authentication failed"):
        unwrap_content_key(wrapped, device_a, "device-b")
    with pytest.raises(CryptoError, match="authentication failed"):
        unwrap_content_key(wrapped, device_b, "device-b")


def test_every_flipped_byte_of_a_wrapped_key_is_refused():
    device = X25519PrivateKey.generate()
    wrapped = wrap_content_key(bytes(range(32)), device.public_key(), "device-a")
    for offset in range(len(wrapped)):
        for mask in (0x01, 0x80):
            tampered = bytearray(wrapped)
            tampered[offset] ^= mask
            with pytest.raises(CryptoError, match="wrapped content key"):
                unwrap_content_key(bytes(tampered), device, "device-a")


def test_wrapped_key_of_the_wrong_length_or_version_is_refused():
    device = X25519PrivateKey.generate()
    wrapped = wrap_content_key(bytes(range(32)), device.public_key(), "device-a")
    with pytest.raises(CryptoError, match=f"92 bytes, expected {WRAPPED_KEY_BYTES}"):
        unwrap_content_key(wrapped[:-1], device, "device-a")
    with pytest.raises(CryptoError, match="format version 2 is not supported"):
        unwrap_content_key(b"\x02" + wrapped[1:], device, "device-a")


@pytest.mark.parametrize(
    ("public_key", "reason"),
    [
        ("not base64!", "not valid base64"),
        (base64.b64encode(bytes(31)).decode(), "32 raw X25519 bytes"),
        (bytes(33), "32 raw X25519 bytes"),
        (bytes(32), "low-order point"),
        (12345, "32 raw X25519 bytes"),
    ],
)
def test_wrap_content_key_refuses_an_unusable_device_public_key(public_key, reason):
    with pytest.raises(CryptoError, match=reason):
        wrap_content_key(bytes(range(32)), public_key, "device-a")


def test_wrap_content_key_needs_a_device_id_and_a_proper_content_key():
    public_key = X25519PrivateKey.generate().public_key()
    with pytest.raises(CryptoError, match="device id must be a non-empty string"):
        wrap_content_key(bytes(range(32)), public_key, "")
    with pytest.raises(CryptoError, match="content key must be 32 bytes"):
        wrap_content_key(bytes(range(31)), public_key, "device-a")


def test_signatures_verify_only_for_the_signed_data_and_the_signing_key():
    key, other = SigningKey.generate(), SigningKey.generate()
    signature = sign(b"manifest bytes", key)

    verify(b"manifest bytes", signature, key.public_key)
    with pytest.raises(CryptoError, match=f"does not verify with key {key.key_id}"):
        verify(b"manifest bytez", signature, key.public_key)
    with pytest.raises(CryptoError, match="does not verify"):
        verify(b"manifest bytes", signature, other.public_key)
    with pytest.raises(CryptoError, match="does not verify"):
        verify(b"manifest bytes", signature[:-1] + bytes([signature[-1] ^ 1]), key.public_key)


def test_a_key_id_is_the_start_of_the_sha256_of_the_raw_public_key():
    key = SigningKey.generate()
    raw = key.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key.key_id == key_id_of(key.public_key) == hashlib.sha256(raw).hexdigest()[:16]
    with pytest.raises(CryptoError, match="does not belong to its key"):
        SigningKey("0" * 16, key.private_key)


def test_keyring_create_makes_a_private_directory_with_one_active_key(tmp_path):
    directory = tmp_path / "keys"
    keyring = Keyring.create(directory)
    active = keyring.active()

    assert mode(directory) == 0o700
    assert mode(directory / f"{active.key_id}.pem") == 0o600
    assert mode(directory / Keyring.STATE_FILE) == 0o600
    assert Keyring(directory).active().key_id == active.key_id
    assert Keyring.create(directory).active().key_id == active.key_id
    assert list(keyring.public_keys()) == [active.key_id]
    assert not list(directory.glob(".*.tmp"))


def test_an_empty_keyring_creates_its_first_key_once_under_concurrent_callers(tmp_path):
    keyring_dir = tmp_path / "keys"
    key_ids = []
    threads = [threading.Thread(target=lambda: key_ids.append(Keyring(keyring_dir).active().key_id)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(key_ids) == 8 and len(set(key_ids)) == 1
    assert [path.stem for path in keyring_dir.glob("*.pem")] == key_ids[:1]


def test_rotation_keeps_old_signatures_valid_until_the_old_key_is_retired(tmp_path):
    # given a package signature made before a rotation
    keyring = Keyring.create(tmp_path)
    old = keyring.active()
    signature = sign(b"manifest v1", old)

    # when the keyring rotates
    new = keyring.rotate()

    # then new signatures use the new key and the old one still verifies
    assert keyring.active().key_id == new.key_id != old.key_id
    assert set(keyring.public_keys()) == {old.key_id, new.key_id}
    verify(b"manifest v1", signature, keyring.public_keys()[old.key_id])

    # and once retired, the old key verifies nothing and its private key is gone
    keyring.retire(old.key_id)
    assert set(keyring.public_keys()) == {new.key_id}
    assert set(Keyring(tmp_path).export_public()) == {new.key_id}
    assert not (tmp_path / f"{old.key_id}.pem").exists()
    with pytest.raises(CryptoError, match="is retired"):
        keyring.get(old.key_id)
    keyring.retire(old.key_id)


def test_a_restored_retired_key_file_is_still_not_trusted(tmp_path):
    keyring = Keyring.create(tmp_path)
    old = keyring.active()
    pem = (tmp_path / f"{old.key_id}.pem").read_bytes()
    keyring.rotate()
    keyring.retire(old.key_id)

    (tmp_path / f"{old.key_id}.pem").write_bytes(pem)

    assert old.key_id not in keyring.public_keys()


def test_the_active_key_cannot_be_retired_and_unknown_keys_are_named(tmp_path):
    keyring = Keyring.create(tmp_path)
    with pytest.raises(CryptoError, match="is the active key: rotate"):
        keyring.retire(keyring.active().key_id)
    with pytest.raises(CryptoError, match="0123456789abcdef is not in the keyring"):
        keyring.retire("0123456789abcdef")
    with pytest.raises(CryptoError, match="16 lowercase hex digits"):
        keyring.retire("../../etc/passwd")
    assert list(keyring.public_keys()) == [keyring.active().key_id]


def test_exported_public_keys_load_back_with_their_ids_checked(tmp_path):
    keyring = Keyring.create(tmp_path)
    keyring.rotate()
    exported = json.loads(json.dumps(keyring.export_public()))

    pinned = import_public_keys(exported)

    assert set(pinned) == set(keyring.public_keys())
    signature = sign(b"data", keyring.active())
    verify(b"data", signature, pinned[keyring.active().key_id])
    first, second = sorted(exported)
    with pytest.raises(CryptoError, match="the id does not match"):
        import_public_keys({first: exported[second]})
    with pytest.raises(CryptoError, match="not valid base64"):
        import_public_keys({first: "%%%"})


def test_a_damaged_keyring_is_reported_with_the_file_at_fault(tmp_path):
    keyring = Keyring.create(tmp_path)
    key_id = keyring.active().key_id

    (tmp_path / f"{key_id}.pem").write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(CryptoError, match=f"{key_id}.pem holds key"):
        keyring.active()

    (tmp_path / Keyring.STATE_FILE).write_text("{not json")
    with pytest.raises(CryptoError, match=r"keyring\.json is not valid JSON"):
        keyring.active()
