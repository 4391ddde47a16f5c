"""The registry console in a real Chromium: live job progress and loss curve, and the report's charts."""

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import expect

from fleet_server.registry import services
from fleet_server.registry.compression_jobs import run_job
from fleet_server.registry.models import CompressionJob, JobStatus
from tests.browser.conftest import browser, page  # noqa: F401 - the shared Chromium fixtures
from tests.fleet_server.registry.conftest import TINY
from tests.helpers import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def logged_in(page, live_server):  # noqa: F811
    user = User.objects.create_user("olga", password="a-long-operator-password")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "a-long-operator-password")
    page.click("button[type=submit]")
    page.wait_for_url("**/fleet/")
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def test_a_running_job_updates_live_and_the_report_draws_its_charts(page, live_server, logged_in, model_version):  # noqa: F811
    # given: a job the page opens while it is running
    job = services.start_compression_job(model_version, "3-bit", TINY["3-bit"], enqueue=False)
    CompressionJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, phase="admm", step=1, total=7, loss_curve=[[1, 3.0]]
    )
    page.goto(f"{live_server.url}/models/jobs/{job.pk}/")
    expect(page.get_by_test_id("job-status")).to_have_text("Running")
    canvas = page.locator("#loss-chart")
    wait_until(lambda: canvas.get_attribute("data-points") == "1", timeout=10, message="the first loss point")
    page.evaluate("window.__sameDocument = true")

    # when: the worker reports progress
    CompressionJob.objects.filter(pk=job.pk).update(step=3, loss_curve=[[1, 3.0], [2, 2.5], [3, 2.0]])

    # then: bar and curve follow without a reload
    expect(page.get_by_test_id("job-progress")).to_have_attribute("value", "3", timeout=10_000)
    wait_until(lambda: canvas.get_attribute("data-points") == "3", timeout=10, message="three loss points")
    assert page.evaluate("window.__sameDocument") is True

    # and: a finished job's report draws the trade-off and per-layer charts
    CompressionJob.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, step=0, loss_curve=[])
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    expect(page.get_by_test_id("job-status")).to_have_text("Succeeded", timeout=10_000)
    page.get_by_test_id("job-package").click()
    expect(page.get_by_test_id("layer-table").locator("tbody tr")).to_have_count(
        len(CompressionJob.objects.get(pk=job.pk).report["layers"])
    )
    drawn = page.evaluate(
        "['tradeoff-chart', 'layer-bytes-chart'].map((id) => Boolean(Chart.getChart(document.getElementById(id))))"
    )
    assert drawn == [True, True]
    assert logged_in == []  # no JavaScript errors on any page
