"""The operator's console in a real Chromium: log in, watch a real device go online and offline live."""

import signal

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in
from tests.conftest import edge_agent
from tests.helpers import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.integration]


def test_the_fleet_list_follows_a_device_online_and_offline_without_reloading(
    page, live_server, operator_login, enroll, ingest_process, processes, platform_env
):
    state_dir, device_id = enroll("gate-box")
    log_in(page, live_server, operator_login)
    row = page.locator(f"tr[data-device='{device_id}']")
    expect(row.get_by_test_id("status")).to_have_text("offline")
    page.evaluate("window.__sameDocument = true")

    processes.start(
        "agent", edge_agent(state_dir, "run", "--keepalive", "5", "--telemetry-interval", "1"), platform_env
    )
    expect(row.get_by_test_id("status")).to_have_text("online", timeout=20_000)
    expect(page.get_by_test_id("online-count")).to_have_text("1")

    processes.signal("agent", signal.SIGKILL)
    expect(row.get_by_test_id("status")).to_have_text("offline", timeout=15_000)
    # The same document all along: htmx swapped the table, nobody reloaded the page.
    assert page.evaluate("window.__sameDocument") is True


def test_device_page_draws_live_telemetry_and_runs_a_ping(
    page, live_server, operator_login, enroll, ingest_process, celery_worker_process, processes, platform_env
):
    from fleet_server.devices.models import Device

    state_dir, device_id = enroll("south-lot-box")
    processes.start("agent", edge_agent(state_dir, "run", "--telemetry-interval", "1"), platform_env)
    wait_until(lambda: Device.objects.get(pk=device_id).online, timeout=20, message="online")
    log_in(page, live_server, operator_login)

    page.goto(f"{live_server.url}/devices/{device_id}/")
    canvas = page.locator("#telemetry-chart")
    wait_until(lambda: int(canvas.get_attribute("data-points") or 0) >= 2, timeout=20, message="chart points")

    celery_worker_process()
    page.select_option("#id_name", "ping")
    page.click("text=Send")
    state = page.locator("#commands tbody tr").first.get_by_test_id("command-state")
    expect(state).to_have_text("Queued")
    # The worker publishes it, the agent answers, the ingest records it, the table polls it in.
    expect(state).to_have_text("Done", timeout=30_000)
