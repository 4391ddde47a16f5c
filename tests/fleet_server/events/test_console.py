"""The console's park view: spaces, alerts and line counts, with live parts and a JSON series for the chart."""

import pytest
from django.test import Client

from fleet_server.events.services import ingest_events
from tests.fleet_server.events.test_ingest import T0, message


@pytest.fixture
def client_viewer(viewer):
    client = Client()
    client.force_login(viewer)
    return client


@pytest.mark.django_db
def test_park_page_shows_spaces_alerts_and_counts(client_viewer, device):
    ingest_events([
        message(device.pk, seq=1, zone="N1", start=T0),
        message(device.pk, seq=2, zone="N2", start=T0, attributes={"state": "free"}),
        message(device.pk, seq=3, rule="intrusion", zone="yard", start=T0 + 5, attributes={}),
        message(device.pk, seq=4, rule="line_count", zone="entry", start=T0, attributes={"direction": "out"}),
    ])  # fmt: skip
    page = client_viewer.get("/occupancy/north/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "1</strong> occupied, <strong>1</strong> free" in html
    assert "yard" in html and "ongoing" in html and "occupancy-chart" in html
    # live parts re-render alone
    part = client_viewer.get("/occupancy/north/?part=alerts", HTTP_HX_REQUEST="true").content.decode()
    assert "yard" in part and "<html" not in part
    assert client_viewer.get("/occupancy/").status_code == 200
    series = client_viewer.get("/occupancy/north/occupancy.json?hours=1").json()
    assert set(series) == {"t", "occupied"} and len(series["t"]) == len(series["occupied"])


@pytest.mark.django_db
def test_park_page_needs_a_login(device):
    assert Client().get("/occupancy/north/").status_code == 302
