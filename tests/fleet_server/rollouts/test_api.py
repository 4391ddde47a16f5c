"""The deployments REST API: roles, tenant scoping, all-or-nothing creation, per-target state, rollback."""

import pytest
from rest_framework.test import APIClient

from fleet_server.devices.models import Command
from fleet_server.rollouts import services
from fleet_server.tenants.services import issue_api_key
from tests.fleet_server.rollouts.conftest import keyed_device

DEPLOYMENTS = "/api/v1/deployments/"


@pytest.fixture
def rival_key_client(other_tenant):
    _, key = issue_api_key(other_tenant, "rival")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def test_an_operator_deploys_and_gets_a_command_per_device(operator_client, package, boxes):
    ids = [device.pk for device, _ in boxes]

    response = operator_client.post(DEPLOYMENTS, {"package": package.pk, "devices": ids, "observe_s": 5}, format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["model"], body["version"], body["observe_s"]) == ("lot-detector", 1, 5.0)
    assert body["summary"] == {
        "total": 2, "states": {"queued": 2}, "final": 0, "succeeded": 0, "failed": 0, "percent_done": 0.0,
        "is_final": False,
    }  # fmt: skip
    commands = {target["device"]: target["command"] for target in body["targets"]}
    assert set(commands) == set(ids)
    for device_id, command_id in commands.items():
        assert Command.objects.get(pk=command_id, device_id=device_id).name == "deploy"


def test_a_viewer_and_an_api_key_read_but_do_not_deploy(viewer_client, api_key_client, package, boxes):
    payload = {"package": package.pk, "devices": [boxes[0][0].pk]}
    assert viewer_client.post(DEPLOYMENTS, payload, format="json").status_code == 403
    assert api_key_client.post(DEPLOYMENTS, payload, format="json").status_code == 403
    assert (
        viewer_client.post(f"{DEPLOYMENTS}rollback/", {"devices": [boxes[0][0].pk]}, format="json").status_code == 403
    )
    assert not Command.objects.exists()

    deployment = services.deploy(package, [boxes[0][0]])
    assert viewer_client.get(f"{DEPLOYMENTS}{deployment.pk}/").status_code == 200
    listed = api_key_client.get(DEPLOYMENTS).json()["results"]
    assert [d["id"] for d in listed] == [deployment.pk]
    assert listed[0]["targets"][0]["device_name"] == "box-a"


def test_anonymous_callers_are_refused(db):
    assert APIClient().get(DEPLOYMENTS).status_code in (401, 403)


def test_another_tenants_deployments_answer_404_to_an_api_key(rival_key_client, package, boxes):
    deployment = services.deploy(package, [boxes[0][0]])
    assert rival_key_client.get(DEPLOYMENTS).json()["results"] == []
    assert rival_key_client.get(f"{DEPLOYMENTS}{deployment.pk}/").status_code == 404


def test_a_package_to_another_tenants_device_is_refused_and_nothing_sent(operator_client, package, boxes, other_site):
    rival, _ = keyed_device(other_site, "rival-box")
    payload = {"package": package.pk, "devices": [boxes[0][0].pk, rival.pk]}

    response = operator_client.post(DEPLOYMENTS, payload, format="json")

    assert response.status_code == 400
    assert "another tenant" in response.json()["detail"]
    assert not Command.objects.exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"package": 999999, "devices": ["x"]}, "package"),
        ({"devices": ["x"]}, "package"),
        ({"package": "PACKAGE", "devices": []}, "devices"),
        ({"package": "PACKAGE", "devices": ["no-such-device"]}, "devices"),
        ({"package": "PACKAGE", "devices": ["BOX"], "observe_s": -3}, "observe_s"),
    ],
)
def test_bad_requests_say_what_is_wrong(operator_client, package, boxes, payload, field):
    payload = {k: (package.pk if v == "PACKAGE" else v) for k, v in payload.items()}
    if payload.get("devices") == ["BOX"]:
        payload["devices"] = [boxes[0][0].pk]
    response = operator_client.post(DEPLOYMENTS, payload, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not Command.objects.exists()


def test_bad_scene_configs_answer_400_with_the_reason(operator_client, package, boxes):
    payload = {"package": package.pk, "devices": [boxes[0][0].pk], "scene_configs": [{"camera": "c", "width": 1}]}
    response = operator_client.post(DEPLOYMENTS, payload, format="json")
    assert response.status_code == 400
    assert "scene config 1: frame size" in response.json()["detail"]


def test_an_operator_rolls_back_a_deployments_targets_or_any_device(operator_client, package, boxes):
    devices = [device for device, _ in boxes]
    deployment = services.deploy(package, devices)

    response = operator_client.post(
        f"{DEPLOYMENTS}{deployment.pk}/rollback/", {"reason": "bad night mAP"}, format="json"
    )

    assert response.status_code == 202, response.json()
    assert {row["device"] for row in response.json()} == {d.pk for d in devices}
    detail = operator_client.get(f"{DEPLOYMENTS}{deployment.pk}/").json()
    assert all(target["rollback_command"] for target in detail["targets"])

    response = operator_client.post(f"{DEPLOYMENTS}rollback/", {"devices": [devices[0].pk]}, format="json")
    assert response.status_code == 202
    assert Command.objects.filter(name="rollback", device=devices[0]).count() == 2
    assert operator_client.post(f"{DEPLOYMENTS}rollback/", {}, format="json").status_code == 400
