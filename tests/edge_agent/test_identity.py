import stat

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.identity import DeviceIdentity, generate_device_key, load_device_key, public_key_b64, save_device_key


def _identity() -> DeviceIdentity:
    return DeviceIdentity(
        device_id="d1", name="box", kind="smart_box_cpu", site="north", server_url="http://x", mqtt_url="mqtt://h:1",
        mqtt_username="d1", mqtt_password="secret", mqtt_client_id="agent-d1", keepalive_s=30,
        telemetry_interval_s=10.0, enrolled_at=1.0,
    )  # fmt: skip


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_identity_and_key_are_private_to_the_owner(tmp_path):
    state = tmp_path / "agent"
    key = generate_device_key()
    save_device_key(state, key)
    _identity().save(state)
    assert _mode(state) == 0o700
    assert _mode(state / "identity.json") == 0o600
    assert _mode(state / "device_key.pem") == 0o600
    assert not list(state.glob(".*.tmp"))


def test_identity_and_key_round_trip(tmp_path):
    key = generate_device_key()
    save_device_key(tmp_path, key)
    _identity().save(tmp_path)
    assert DeviceIdentity.load(tmp_path) == _identity()
    loaded = load_device_key(tmp_path)
    assert isinstance(loaded, X25519PrivateKey)
    assert public_key_b64(loaded) == public_key_b64(key)
