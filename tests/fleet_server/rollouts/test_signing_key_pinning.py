"""Devices pin the platform's package-signing public keys at enrollment (and can verify packages with them)."""

import json

import pytest
from rest_framework.test import APIClient

from edge_agent.enroll import EnrollmentFailed, _signing_keys, enroll
from edge_agent.identity import DeviceIdentity
from fleet_server.devices.services import create_claim_token
from fleet_server.registry.storage import signing_keyring
from model_store.crypto import import_public_keys, sign, verify
from tests.fleet_server.conftest import new_public_key


def test_the_enrollment_answer_carries_every_unretired_signing_key(site):
    # given: a keyring that rotated once, so devices must trust both keys
    keyring = signing_keyring()
    old = keyring.active()
    new = keyring.rotate()
    _, token = create_claim_token(site)

    # when
    answer = APIClient().post(
        "/api/v1/enroll/", {"token": token, "kind": "smart_box_cpu", "public_key": new_public_key()}, format="json"
    )

    # then
    assert answer.status_code == 201, answer.json()
    pinned = answer.json()["signing_keys"]
    assert pinned == keyring.export_public()
    assert set(pinned) == {old.key_id, new.key_id}


def test_the_first_enrollment_creates_the_active_signing_key(site):
    _, token = create_claim_token(site)
    answer = APIClient().post(
        "/api/v1/enroll/", {"token": token, "kind": "smart_box_cpu", "public_key": new_public_key()}, format="json"
    )
    assert list(answer.json()["signing_keys"]) == [signing_keyring().active().key_id]


def test_an_agent_enrolls_and_stores_the_keys_it_then_verifies_packages_with(live_server, site, tmp_path):
    # given
    _, token = create_claim_token(site)
    state = tmp_path / "agent"

    # when
    identity = enroll(live_server.url, token, state, kind="smart_box_cpu", name="gate-box")

    # then: saved and loaded back, the keys verify what the platform signs
    loaded = DeviceIdentity.load(state)
    assert loaded.signing_keys == identity.signing_keys == signing_keyring().export_public()
    active = signing_keyring().active()
    trusted = import_public_keys(loaded.signing_keys)
    verify(b"manifest", sign(b"manifest", active), trusted[active.key_id])


def test_an_identity_file_written_before_pinning_still_loads(tmp_path):
    old = {
        "device_id": "d1", "name": "box", "kind": "smart_box_cpu", "site": "north", "server_url": "http://x",
        "mqtt_url": "mqtt://h:1", "mqtt_username": "d1", "mqtt_password": "secret", "mqtt_client_id": "agent-d1",
        "keepalive_s": 30, "telemetry_interval_s": 10.0, "enrolled_at": 1.0,
    }  # fmt: skip
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "identity.json").write_text(json.dumps(old))
    assert DeviceIdentity.load(tmp_path).signing_keys == {}


@pytest.mark.parametrize(
    ("answer", "message"),
    [({}, "no package-signing keys"), ({"signing_keys": {"0123456789abcdef": "AAAA"}}, "unusable")],
)
def test_an_enrollment_answer_without_usable_keys_fails_the_enrollment(answer, message):
    with pytest.raises(EnrollmentFailed, match=message):
        _signing_keys(answer)
