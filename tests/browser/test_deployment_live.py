"""A deployment's page in a real Chromium: each device's state and download progress move live, no reload."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

import fleet_protocol as fp
from fleet_server.devices.services import DeviceMessage, ingest_device_messages
from fleet_server.rollouts import services
from tests.browser.conftest import log_in
from tests.fleet_server.rollouts.conftest import keyed_device, make_package

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.integration]


def _ack(target, state: fp.AckState, **fields) -> None:
    body = fp.CommandAckBody(command_id=str(target.command_id), state=state, **fields)
    ingest_device_messages([DeviceMessage(target.device_id, fp.envelope(body), timezone.now())])


def test_the_deployment_table_follows_download_progress_and_the_outcome(
    page,
    live_server,
    operator_login,
    park,
    settings,
    tmp_path,
):
    settings.BLOB_STORE_ROOT = tmp_path / "blobs"
    settings.MODEL_SIGNING_KEYRING_DIR = tmp_path / "signing-keys"
    package = make_package(park.tenant)
    box, _ = keyed_device(park, "lot-box", runtimes=["cpu-int8"])
    target = services.deploy(package, [box]).targets.get()
    log_in(page, live_server, operator_login)
    page.goto(f"{live_server.url}/deployments/{target.deployment_id}/")
    page.evaluate("window.__sameDocument = true")
    row = page.locator(f"tr[data-device='{box.pk}']")
    expect(row.get_by_test_id("target-state")).to_have_text("Queued")

    # when: the device reports its download, then its verdict
    _ack(target, fp.AckState.DOWNLOADING, progress=40.0)
    expect(row.get_by_test_id("target-state")).to_have_text("Downloading", timeout=10_000)
    expect(row.get_by_test_id("target-progress")).to_have_attribute("value", "40.0")
    _ack(target, fp.AckState.HEALTHY, reason="lot-detector v1 committed in slot a")

    # then: the table shows it, and the summary says the deployment is done, all without a reload
    expect(row.get_by_test_id("target-state")).to_have_text("Healthy", timeout=10_000)
    expect(row.get_by_test_id("target-reason")).to_have_text("lot-detector v1 committed in slot a")
    expect(page.get_by_test_id("deployment-summary")).to_contain_text("1 of 1 finished")
    assert page.evaluate("window.__sameDocument") is True
