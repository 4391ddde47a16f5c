"""Server-rendered console pages: access by role, live partials for htmx, enrollment tokens, commands."""

from django.test import Client

from fleet_server.devices.models import ClaimToken, Command
from tests.fleet_server.conftest import make_device

HTMX = {"HTTP_HX_REQUEST": "true"}


def test_pages_need_a_login(db):
    response = Client().get("/fleet/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_login_page_logs_in(operator):
    client = Client()
    response = client.post("/login/", {"username": "olga", "password": "pw-olga"})
    assert response.status_code == 302
    assert client.get("/fleet/").status_code == 200


def test_fleet_page_lists_devices_and_polls_its_table(viewer_client, site):
    make_device(site, "gate", online=True)
    make_device(site, "lot")

    page = viewer_client.get("/fleet/").content.decode()
    partial = viewer_client.get("/fleet/?online=true", **HTMX).content.decode()

    assert "<html" in page and 'hx-trigger="every 3s"' in page
    assert "gate" in page and "lot" in page
    assert "<html" not in partial
    assert "gate" in partial and ">lot<" not in partial
    assert 'hx-get="/fleet/?online=true"' in partial


def test_device_page_shows_status_chart_and_commands(viewer_client, device):
    page = viewer_client.get(f"/devices/{device.pk}/").content.decode()
    assert "telemetry-chart" in page and "Commands" in page
    status = viewer_client.get(f"/devices/{device.pk}/?part=status", **HTMX).content.decode()
    assert "<html" not in status and "offline" in status
    series = viewer_client.get(f"/devices/{device.pk}/telemetry.json").json()
    assert {"t", "cpu_percent", "memory_percent", "temperature_c", "camera_fps", "latency_p95_ms"} <= set(series)
    assert "camera-chart" in page and "latency-chart" in page


def test_device_telemetry_series_carry_the_pipeline_per_camera_and_runtime(viewer_client, device):
    from django.utils import timezone

    from fleet_server.devices.models import TelemetrySample

    now = timezone.now()
    for seconds, cameras in ((20, [{"camera": "lot-a", "fps": 4.0, "dropped_frames": 0}]), (10, [])):
        TelemetrySample.objects.create(
            device=device, received_at=now - timezone.timedelta(seconds=seconds), reported_at=now,
            cpu_percent=10, memory_percent=20, disk_free_mb=5000,
            details={"cameras": cameras, "runtimes": [{"runtime": "cpu-int8", "latency_p50_ms": 9.0,
                     "latency_p95_ms": 14.0}], "queues": {"outbox": 3}},
        )  # fmt: skip
    series = viewer_client.get(f"/devices/{device.pk}/telemetry.json").json()
    assert series["camera_fps"] == {"lot-a": [4.0, None]}
    assert series["latency_p95_ms"] == {"cpu-int8": [14.0, 14.0]}
    assert series["queues"] == {"outbox": [3, 3]}
    assert series["latest"]["disk_free_mb"] == 5000 and series["latest"]["queues"] == {"outbox": 3}


def test_viewers_cannot_create_claim_tokens_or_send_commands(viewer_client, site, device):
    assert viewer_client.get("/enroll/").status_code == 403
    response = viewer_client.post(f"/devices/{device.pk}/commands/", {"name": "ping"}, **HTMX)
    assert response.status_code == 422
    assert "only operators" in response.content.decode()
    assert Command.objects.count() == 0


def test_operators_create_a_claim_token_and_see_it_once(operator_client, site):
    response = operator_client.post("/enroll/", {"site": site.pk, "hours": 4, "note": "van 3"})
    page = response.content.decode()
    claim = ClaimToken.objects.get()
    assert "edge-agent enroll --server http://testserver --token" in page
    assert claim.note == "van 3"
    again = operator_client.get("/enroll/").content.decode()
    token = page.split('data-testid="claim-token">')[1].split("<")[0]
    assert token not in again


def test_operators_send_commands_and_bad_ones_explain_why(operator_client, device):
    ok = operator_client.post(f"/devices/{device.pk}/commands/", {"name": "ping"}, **HTMX)
    assert ok.status_code == 200 and "Queued" in ok.content.decode()
    bad = operator_client.post(f"/devices/{device.pk}/commands/", {"name": "set_telemetry_interval"}, **HTMX)
    assert bad.status_code == 422
    assert "give the new interval" in bad.content.decode()
    assert Command.objects.count() == 1


def test_operators_create_parks_with_a_valid_time_zone(operator_client, tenant):
    bad = operator_client.post(
        "/parks/new/", {"tenant": tenant.pk, "name": "West", "slug": "west", "time_zone": "Nowhere/Land"}
    )
    assert bad.status_code == 200 and "is not an IANA time zone" in bad.content.decode()
    good = operator_client.post(
        "/parks/new/", {"tenant": tenant.pk, "name": "West", "slug": "west", "time_zone": "Asia/Shanghai"}
    )
    assert good.status_code == 302


def test_health_endpoint(db):
    assert Client().get("/healthz").json() == {"status": "ok"}
