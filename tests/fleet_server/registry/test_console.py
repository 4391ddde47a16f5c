"""Console pages of the registry: roles, upload and family forms, compress form, live job progress, the report."""

import json
import os

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from fleet_server.registry import services
from fleet_server.registry.compression_jobs import run_job
from fleet_server.registry.models import CompressionJob, JobStatus, ModelFamily, ModelVersion
from fleet_server.registry.storage import blob_store
from tests.fleet_server.registry.conftest import TINY


@pytest.fixture
def operator_web(operator):
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_web(viewer):
    client = Client()
    client.force_login(viewer)
    return client


@pytest.fixture
def finished_job(model_version):
    job = services.start_compression_job(model_version, "3-bit", TINY["3-bit"], enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    return CompressionJob.objects.get(pk=job.pk)


def _upload(client, family, data: bytes, **fields):
    form = {"family": family.pk, "file": SimpleUploadedFile("det.pt", data), "input_shape": "1,3,240,320", **fields}
    return client.post("/models/versions/upload/", form)


def test_pages_need_a_role(db, family):
    assert Client().get("/models/").status_code == 302
    nobody = Client()
    nobody.force_login(User.objects.create_user("nobody"))
    assert nobody.get("/models/").status_code == 403
    assert nobody.get(f"/models/families/{family.pk}/").status_code == 403


def test_viewers_read_every_page_but_get_no_forms(viewer_web, finished_job):
    version, package = finished_job.model_version, finished_job.package
    listing = viewer_web.get("/models/").content.decode()
    assert "lot-detector" in listing and "Upload and check" not in listing
    assert "Models</a>" in listing  # the nav link
    assert f"v{package.version}" in viewer_web.get(f"/models/families/{version.family.pk}/").content.decode()
    version_page = viewer_web.get(f"/models/versions/{version.pk}/").content.decode()
    assert "Start job" not in version_page and f"#{finished_job.pk}" in version_page
    assert viewer_web.get(f"/models/jobs/{finished_job.pk}/").status_code == 200
    assert viewer_web.get(f"/models/packages/{package.pk}/").status_code == 200


def test_operators_create_a_family_and_upload_a_version(operator_web, tenant, checkpoint_bytes):
    created = operator_web.post(
        "/models/families/new/", {"tenant": tenant.pk, "name": "gate", "labels": "vehicle, person"}
    )
    assert created.status_code == 302
    family = ModelFamily.objects.get(name="gate")
    assert family.labels == ["vehicle", "person"] and f"family={family.pk}" in created["Location"]
    duplicate = operator_web.post("/models/families/new/", {"tenant": tenant.pk, "name": "gate", "labels": "car"})
    assert duplicate.status_code == 422 and "already has a family" in duplicate.content.decode()

    uploaded = _upload(operator_web, family, checkpoint_bytes, notes="from the console")
    version = ModelVersion.objects.get(family=family)
    assert uploaded.status_code == 302 and uploaded["Location"] == f"/models/versions/{version.pk}/"
    assert version.notes == "from the console" and version.created_by.username == "olga"


@pytest.mark.parametrize(
    ("data", "fields", "message"),
    [
        (os.urandom(3000), {}, "not a PyTorch checkpoint"),
        (None, {"input_shape": "1,3,17,17"}, "multiples of 16"),
    ],
)
def test_bad_uploads_show_the_reason_and_store_nothing(operator_web, family, checkpoint_bytes, data, fields, message):
    response = _upload(operator_web, family, checkpoint_bytes if data is None else data, **fields)
    assert response.status_code == 422 and message in response.content.decode()
    assert ModelVersion.objects.count() == 0 and list(blob_store().digests()) == []


def test_an_upload_over_the_limit_is_refused(operator_web, family, checkpoint_bytes, settings):
    settings.MODEL_UPLOAD_MAX_BYTES = 1000
    response = _upload(operator_web, family, checkpoint_bytes)
    assert response.status_code == 413 and "MODEL_UPLOAD_MAX_BYTES" in response.content.decode()
    assert ModelVersion.objects.count() == 0


def test_the_upload_form_keeps_its_csrf_protection(operator, family, checkpoint_bytes):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert _upload(client, family, checkpoint_bytes).status_code == 403
    client.get("/models/")
    token = client.cookies["csrftoken"].value
    assert _upload(client, family, checkpoint_bytes, csrfmiddlewaretoken=token).status_code == 302


def test_viewers_cannot_upload(viewer_web, family, checkpoint_bytes):
    assert _upload(viewer_web, family, checkpoint_bytes).status_code == 403
    assert ModelVersion.objects.count() == 0


def test_the_compress_form_starts_a_job(operator_web, model_version, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = operator_web.post(f"/models/versions/{model_version.pk}/", {"preset": "3-bit", "steps": "9"})
    job = CompressionJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/models/jobs/{job.pk}/"
    assert len(callbacks) == 1 and (job.config["admm_steps"], job.config["finetune_steps"]) == (9, 3)


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"preset": "int8", "steps": "5"}, "trains nothing"),
        ({"preset": "3-bit", "config": "{not json"}, "not valid JSON"),
        ({"preset": "3-bit", "config": '{"admm_steps": -4}'}, "between"),
        ({"preset": "fp4"}, "not one of the available choices"),
    ],
)
def test_bad_compress_forms_show_the_reason(operator_web, model_version, form, message):
    response = operator_web.post(f"/models/versions/{model_version.pk}/", form)
    assert response.status_code == 422 and message in response.content.decode()
    assert not CompressionJob.objects.exists()


def test_viewers_cannot_start_jobs(viewer_web, model_version):
    viewer_web.post(f"/models/versions/{model_version.pk}/", {"preset": "int8"})
    assert not CompressionJob.objects.exists()


def test_a_running_job_page_polls_and_can_be_cancelled(operator_web, model_version):
    job = services.start_compression_job(model_version, "int8", enqueue=False)
    CompressionJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, phase="admm", step=3, total=12, loss_curve=[[1, 2.5], [2, 2.0], [3, 1.5]]
    )
    part = operator_web.get(f"/models/jobs/{job.pk}/?part=progress", HTTP_HX_REQUEST="true").content.decode()
    assert 'hx-trigger="every 1s"' in part and "<html" not in part and 'value="3"' in part
    progress = operator_web.get(f"/models/jobs/{job.pk}/progress.json").json()
    assert progress == {
        "status": "running", "final": False, "phase": "admm", "step": 3, "total": 12, "percent": 25.0,
        "loss_curve": [[1, 2.5], [2, 2.0], [3, 1.5]],
    }  # fmt: skip
    assert operator_web.post(f"/models/jobs/{job.pk}/cancel/").status_code == 302
    assert CompressionJob.objects.get(pk=job.pk).cancel_requested


def test_a_finished_job_stops_polling_and_links_its_package(viewer_web, finished_job):
    part = viewer_web.get(f"/models/jobs/{finished_job.pk}/?part=progress", HTTP_HX_REQUEST="true").content.decode()
    assert "hx-trigger" not in part and f"/models/packages/{finished_job.package.pk}/" in part
    assert "Cancel job" not in part


def test_the_report_page_has_the_layer_table_and_chart_data(viewer_web, finished_job, model_version):
    other = services.start_compression_job(model_version, "data-free", TINY["data-free"], enqueue=False)
    run_job(other.pk)
    package = finished_job.package
    page = viewer_web.get(f"/models/packages/{package.pk}/").content.decode()
    layers = finished_job.report["layers"]
    assert all(layer["name"] in page for layer in layers)
    data = json.loads(page.split('id="package-chart-data" type="application/json">')[1].split("</script>")[0])
    assert data["layers"]["names"] == [layer["name"] for layer in layers]
    assert [entry["current"] for entry in data["family"]] == [True, False]
    assert data["family"][0]["ratio"] == round(package.compression_ratio, 2)


def test_a_sensitivity_package_shows_what_each_layer_cost_alone(viewer_web, finished_job, model_version):
    job = services.start_compression_job(model_version, "ternary-sensitive", TINY["ternary-sensitive"], enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    job.refresh_from_db()

    page = viewer_web.get(f"/models/packages/{job.package.pk}/").content.decode()

    assert "Loss increase alone" in page
    assert page.count('data-testid="layer-sensitivity"') == len(job.report["layers"])
    first = job.report["layers"][1]  # the stem (layer 0) is int8, no candidate; the next one was measured
    assert f"{first['sensitivity']:.3f}" in page
    # a package without the measurement has no such column
    plain = viewer_web.get(f"/models/packages/{finished_job.package.pk}/").content.decode()
    assert "Loss increase alone" not in plain


@pytest.mark.parametrize("model", ["modelfamily", "modelversion", "compressionjob", "package"])
def test_the_admin_lists_registry_rows_read_only(finished_job, model):
    admin = Client()
    admin.force_login(User.objects.create_superuser("root", password="x"))
    assert admin.get(f"/admin/registry/{model}/").status_code == 200
    assert admin.get(f"/admin/registry/{model}/add/").status_code == (200 if model == "modelfamily" else 403)
