import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from fleet_server.devices.models import ClaimToken, Device
from fleet_server.devices.services import check_mosquitto_password, create_claim_token
from tests.fleet_server.conftest import new_public_key

ENROLL = "/api/v1/enroll/"


def _request(token: str, **overrides) -> dict:
    return {
        "token": token, "name": "gate-box", "kind": "smart_box_fpga", "public_key": new_public_key(),
        "agent_version": "0.1.0", "hardware": {"cpu_count": 4},
        "cameras": [{"camera_id": "gate-in", "name": "Gate inbound"}, {"camera_id": "gate-out"}], **overrides,
    }  # fmt: skip


def test_a_claim_token_buys_an_identity_and_broker_credentials(site):
    claim, token = create_claim_token(site, note="installer Ann")
    body = _request(token)

    response = APIClient().post(ENROLL, body, format="json")

    assert response.status_code == 201, response.json()
    answer = response.json()
    device = Device.objects.get(pk=answer["device_id"])
    assert (device.name, device.kind, device.site, device.public_key) == (
        "gate-box", "smart_box_fpga", site, body["public_key"]
    )  # fmt: skip
    assert sorted(device.cameras.values_list("camera_id", flat=True)) == ["gate-in", "gate-out"]
    assert answer["mqtt"]["username"] == device.mqtt_username
    assert answer["mqtt"]["client_id"] == f"agent-{device.pk}"
    assert check_mosquitto_password(answer["mqtt"]["password"], device.mqtt_password_hash)
    assert not check_mosquitto_password("wrong", device.mqtt_password_hash)
    claim.refresh_from_db()
    assert claim.used_at is not None and claim.device == device
    # Only a hash of the token is stored.
    assert token not in str(ClaimToken.objects.values_list("token_hash", flat=True))


def test_a_used_token_is_refused_and_changes_nothing(site):
    _, token = create_claim_token(site)
    assert APIClient().post(ENROLL, _request(token), format="json").status_code == 201

    response = APIClient().post(ENROLL, _request(token), format="json")

    assert response.status_code == 410
    assert response.json()["code"] == "token_used"
    assert "already used" in response.json()["detail"]
    assert Device.objects.count() == 1


def test_an_expired_token_is_refused(site):
    claim, token = create_claim_token(site)
    ClaimToken.objects.filter(pk=claim.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    response = APIClient().post(ENROLL, _request(token), format="json")

    assert response.status_code == 410
    assert response.json()["code"] == "token_expired"
    assert Device.objects.count() == 0


def test_an_unknown_token_is_refused(db):
    response = APIClient().post(ENROLL, _request("no-such-token"), format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_token"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"public_key": "not base64!"}, "invalid_public_key"),
        ({"public_key": "AAAA"}, "invalid_public_key"),
        ({"kind": "toaster"}, "kind"),
        ({"cameras": [{"camera_id": "a"}, {"camera_id": "a"}]}, "cameras"),
        ({"cameras": [{"camera_id": "no spaces"}]}, "cameras"),
    ],
)
def test_bad_requests_are_refused_and_do_not_spend_the_token(site, overrides, field):
    claim, token = create_claim_token(site)

    response = APIClient().post(ENROLL, _request(token, **overrides), format="json")

    assert response.status_code == 400
    assert field in str(response.json())
    claim.refresh_from_db()
    assert claim.used_at is None
    assert Device.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_two_devices_racing_for_one_token_enroll_exactly_one(site):
    _, token = create_claim_token(site)
    results: list[int] = []
    barrier = threading.Barrier(2)

    def enroll():
        barrier.wait()
        results.append(APIClient().post(ENROLL, _request(token), format="json").status_code)
        connection.close()

    threads = [threading.Thread(target=enroll) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [201, 410]
    assert Device.objects.count() == 1


def test_devices_never_receive_the_platforms_own_broker_login(site, settings):
    settings.MQTT_PUBLIC_URL = "mqtts://platform:s3cret@broker.example.com:8883"
    _, token = create_claim_token(site)

    answer = APIClient().post(ENROLL, _request(token), format="json").json()

    assert answer["mqtt"]["url"] == "mqtts://broker.example.com:8883"
    assert "s3cret" not in str(answer)


def test_claim_tokens_never_start_with_a_dash_which_the_enroll_command_line_would_take_for_an_option(site):
    # One URL-safe token in 64 would start with "-"; 500 of them would almost surely hold one.
    tokens = [create_claim_token(site)[1] for _ in range(500)]

    assert not [token for token in tokens if token.startswith("-")]
    assert len(set(tokens)) == 500 and {len(token) for token in tokens} == {32}
