"""REST: events and occupancy, filtered, and scoped to the API key's tenant."""

import pytest

from fleet_server.events.services import ingest_events
from tests.fleet_server.conftest import make_device
from tests.fleet_server.events.test_ingest import T0, message


@pytest.fixture
def events(device, other_site):
    rival = make_device(other_site, name="rival-box")
    ingest_events([
        message(device.pk, seq=1, zone="N1", start=T0),
        message(device.pk, seq=2, rule="fire_lane", zone="fire", start=T0 + 30, attributes={}),
        message(device.pk, seq=3, rule="line_count", camera="gate", zone="entry", start=T0 + 60,
                attributes={"direction": "in", "label": "vehicle"}),
        message(rival.pk, seq=1, zone="R1", start=T0),
    ])  # fmt: skip


@pytest.mark.django_db
def test_events_list_is_tenant_scoped_and_filterable(api_key_client, events):
    # when
    listed = api_key_client.get("/api/v1/events/").json()
    # then only our park's events, newest first
    assert [e["zone"] for e in listed["results"]] == ["entry", "fire", "N1"]
    assert {e["site"] for e in listed["results"]} == {"north"}
    assert api_key_client.get("/api/v1/events/?rule=fire_lane").json()["count"] == 1
    assert api_key_client.get("/api/v1/events/?camera=gate").json()["results"][0]["attributes"]["direction"] == "in"
    since = "2027-01-15T08:00:30Z"  # T0 + 30 s
    assert [e["seq"] for e in api_key_client.get(f"/api/v1/events/?since={since}").json()["results"]] == [3, 2]
    assert api_key_client.get("/api/v1/events/?site=north&open=true").json()["count"] == 3


@pytest.mark.django_db
def test_another_tenants_event_answers_404(api_key_client, events, viewer_client):
    rival_event = viewer_client.get("/api/v1/events/?site=rival-lot").json()["results"][0]
    assert api_key_client.get(f"/api/v1/events/{rival_event['event_id']}/").status_code == 404
    assert viewer_client.get(f"/api/v1/events/{rival_event['event_id']}/").status_code == 200


@pytest.mark.django_db
def test_occupancy_lists_our_spaces_only(api_key_client, events):
    spaces = api_key_client.get("/api/v1/occupancy/?site=north").json()["results"]
    assert [(s["zone"], s["occupied"]) for s in spaces] == [("N1", True)]
    assert api_key_client.get("/api/v1/occupancy/").json()["count"] == 1


@pytest.mark.django_db
def test_events_are_read_only(api_key_client, operator_client, events):
    assert api_key_client.post("/api/v1/events/", {}).status_code in (403, 405)
    assert operator_client.post("/api/v1/events/", {}).status_code == 405
