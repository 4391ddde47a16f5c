"""The REST API: tenant scoping for API keys, roles for console users, filters, commands."""

import pytest
from rest_framework.test import APIClient

from fleet_server.devices.models import Command, Tag
from fleet_server.mqtt_bridge.models import OutboxMessage
from fleet_server.tenants.models import ApiKey
from fleet_server.tenants.services import revoke_api_key
from tests.fleet_server.conftest import make_device


@pytest.fixture
def fleet(site, other_site):
    gate = make_device(site, "gate", "smart_box_fpga", online=True)
    gate.tags.add(Tag.objects.create(name="entrance"))
    lot = make_device(site, "lot", "smart_box_cpu")
    rival = make_device(other_site, "rival-cam", "integrated_camera", online=True)
    return {"gate": gate, "lot": lot, "rival": rival}


def _names(response) -> list[str]:
    return sorted(item["name"] for item in response.json()["results"])


def test_anonymous_callers_are_refused(fleet):
    assert APIClient().get("/api/v1/devices/").status_code in (401, 403)


def test_an_api_key_sees_only_its_tenants_parks_and_devices(api_key_client, fleet):
    assert _names(api_key_client.get("/api/v1/devices/")) == ["gate", "lot"]
    assert [s["slug"] for s in api_key_client.get("/api/v1/sites/").json()["results"]] == ["north"]
    assert api_key_client.get(f"/api/v1/devices/{fleet['rival'].pk}/").status_code == 404
    assert api_key_client.get("/api/v1/sites/rival-lot/").status_code == 404
    assert api_key_client.get(f"/api/v1/devices/{fleet['rival'].pk}/telemetry/").status_code == 404


def test_an_api_key_reads_but_does_not_write(api_key_client, fleet):
    response = api_key_client.patch(f"/api/v1/devices/{fleet['gate'].pk}/", {"name": "x"}, format="json")
    assert response.status_code == 403
    response = api_key_client.post(f"/api/v1/devices/{fleet['gate'].pk}/commands/", {"name": "ping"}, format="json")
    assert response.status_code == 403
    assert Command.objects.count() == 0


def test_a_revoked_or_wrong_key_is_refused(tenant, fleet):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key sp_deadbeef_nope")
    assert client.get("/api/v1/devices/").status_code == 401
    from fleet_server.tenants.services import issue_api_key

    api_key, key = issue_api_key(tenant, "temp")
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert client.get("/api/v1/devices/").status_code == 200
    revoke_api_key(api_key)
    assert client.get("/api/v1/devices/").status_code == 401
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is not None


def test_console_users_see_every_tenant(viewer_client, fleet):
    assert _names(viewer_client.get("/api/v1/devices/")) == ["gate", "lot", "rival-cam"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("kind=smart_box_fpga", ["gate"]),
        ("site=north", ["gate", "lot"]),
        ("tag=entrance", ["gate"]),
        ("online=true", ["gate", "rival-cam"]),
        ("online=false", ["lot"]),
        ("q=riv", ["rival-cam"]),
    ],
)
def test_device_filters(viewer_client, fleet, query, expected):
    assert _names(viewer_client.get(f"/api/v1/devices/?{query}")) == expected


def test_pagination(viewer_client, site):
    for i in range(7):
        make_device(site, f"d{i}")
    page = viewer_client.get("/api/v1/devices/?page_size=3&page=2").json()
    assert page["count"] == 7
    assert len(page["results"]) == 3
    assert page["next"] and page["previous"]


def test_operators_rename_and_tag_devices_viewers_cannot(operator_client, viewer_client, fleet):
    url = f"/api/v1/devices/{fleet['lot'].pk}/"
    assert viewer_client.patch(url, {"name": "x"}, format="json").status_code == 403

    response = operator_client.patch(url, {"name": "lot-east", "tags": ["parking", "east"]}, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["name"] == "lot-east"
    assert sorted(response.json()["tags"]) == ["east", "parking"]


def test_operators_queue_commands_through_the_outbox(operator_client, viewer_client, fleet):
    url = f"/api/v1/devices/{fleet['gate'].pk}/commands/"
    assert viewer_client.post(url, {"name": "ping"}, format="json").status_code == 403

    response = operator_client.post(
        url, {"name": "set_telemetry_interval", "args": {"interval_s": 30}}, format="json"
    )  # fmt: skip

    assert response.status_code == 202, response.json()
    command = Command.objects.get(pk=response.json()["id"])
    assert command.state == "queued"
    outbox = OutboxMessage.objects.get(correlation_id=command.pk)
    assert outbox.topic == f"fleet/v1/{fleet['gate'].pk}/cmd"
    assert viewer_client.get(url).json()["results"][0]["id"] == str(command.pk)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "format_disk"},
        {"name": "set_telemetry_interval", "args": {"interval_s": 0}},
        {"name": "ping", "args": {"x": 1}},
    ],
)
def test_invalid_commands_are_refused_and_queue_nothing(operator_client, fleet, body):
    response = operator_client.post(f"/api/v1/devices/{fleet['gate'].pk}/commands/", body, format="json")
    assert response.status_code == 400
    assert "invalid command" in response.json()["detail"]
    assert Command.objects.count() == 0 and OutboxMessage.objects.count() == 0


def test_claim_tokens_are_for_operators_and_shown_once(operator_client, viewer_client, api_key_client, site):
    body = {"site": "north", "hours": 2, "note": "van 3"}
    assert viewer_client.post("/api/v1/claim-tokens/", body, format="json").status_code == 403
    assert api_key_client.post("/api/v1/claim-tokens/", body, format="json").status_code == 403

    created = operator_client.post("/api/v1/claim-tokens/", body, format="json")

    assert created.status_code == 201
    assert len(created.json()["token"]) > 20
    listed = operator_client.get("/api/v1/claim-tokens/")
    assert listed.json()["results"][0]["note"] == "van 3"
    assert created.json()["token"] not in listed.content.decode()


def test_site_time_zone_is_validated(operator_client, tenant):
    body = {"tenant": "acme", "name": "West", "slug": "west", "time_zone": "Mars/Olympus"}
    response = operator_client.post("/api/v1/sites/", body, format="json")
    assert response.status_code == 400
    assert "time_zone" in response.json()


def test_openapi_schema_and_docs_are_served_without_external_assets(viewer_client):
    schema = viewer_client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ("/api/v1/devices/", "/api/v1/sites/", "/api/v1/enroll/", "ApiKeyAuth"):
        assert path in text
    docs = viewer_client.get("/api/docs/")
    assert docs.status_code == 200
    assert "cdn." not in docs.content.decode()
