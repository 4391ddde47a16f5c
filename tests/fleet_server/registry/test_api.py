"""The registry's REST API: tenant isolation, roles, upload validation, jobs, package download."""

import hashlib
import io
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from fleet_server.registry import services
from fleet_server.registry.compression_jobs import run_job
from fleet_server.registry.models import CompressionJob, JobStatus, ModelFamily, ModelVersion
from fleet_server.registry.storage import blob_store, signing_keyring
from fleet_server.tenants.services import issue_api_key
from tests.fleet_server.registry.conftest import LABELS, TINY


@pytest.fixture
def package(model_version):
    job = services.start_compression_job(model_version, "data-free", TINY["data-free"], enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    return CompressionJob.objects.get(pk=job.pk).package


@pytest.fixture
def rival_package(other_family, checkpoint_bytes):
    version = services.register_version(other_family, io.BytesIO(checkpoint_bytes))
    job = services.start_compression_job(version, "data-free", TINY["data-free"], enqueue=False)
    assert run_job(job.pk) == JobStatus.SUCCEEDED
    return CompressionJob.objects.get(pk=job.pk).package


@pytest.fixture
def rival_key_client(other_tenant):
    _, key = issue_api_key(other_tenant, "rival")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def _upload(client, family, data: bytes, **fields):
    payload = {"family": family.pk, "file": SimpleUploadedFile("detector.pt", data), **fields}
    return client.post("/api/v1/model-versions/", payload, format="multipart")


# --- access ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["model-families/", "model-versions/", "compression-jobs/", "packages/", "signing-keys/"]
)
def test_anonymous_callers_are_refused(db, path):
    assert APIClient().get(f"/api/v1/{path}").status_code in (401, 403)


def test_an_api_key_sees_only_its_tenants_registry(api_key_client, rival_key_client, package, rival_package):
    families = api_key_client.get("/api/v1/model-families/").json()["results"]
    assert [(f["name"], f["version_count"], f["package_count"]) for f in families] == [("lot-detector", 1, 1)]
    assert [p["id"] for p in api_key_client.get("/api/v1/packages/").json()["results"]] == [package.pk]
    assert len(api_key_client.get("/api/v1/model-versions/").json()["results"]) == 1
    assert len(api_key_client.get("/api/v1/compression-jobs/").json()["results"]) == 1
    for path in (
        f"model-families/{rival_package.family_id}/",
        f"model-versions/{rival_package.model_version_id}/",
        f"compression-jobs/{rival_package.job_id}/",
        f"packages/{rival_package.pk}/",
        f"packages/{rival_package.pk}/download/",
    ):
        assert api_key_client.get(f"/api/v1/{path}").status_code == 404, path
    assert rival_key_client.get(f"/api/v1/packages/{package.pk}/download/").status_code == 404


def test_api_keys_and_viewers_read_but_do_not_write(api_key_client, viewer_client, model_version, checkpoint_bytes):
    job = services.start_compression_job(model_version, "int8", enqueue=False)
    for client in (api_key_client, viewer_client):
        family = {"tenant": "acme", "name": "x", "labels": ["car"]}
        assert client.post("/api/v1/model-families/", family, format="json").status_code == 403
        assert _upload(client, model_version.family, checkpoint_bytes).status_code == 403
        request = {"model_version": model_version.pk, "preset": "int8"}
        assert client.post("/api/v1/compression-jobs/", request, format="json").status_code == 403
        assert client.post(f"/api/v1/compression-jobs/{job.pk}/cancel/").status_code == 403
        assert client.get(f"/api/v1/compression-jobs/{job.pk}/").status_code == 200
    assert ModelFamily.objects.count() == 1 and ModelVersion.objects.count() == 1
    assert CompressionJob.objects.get(pk=job.pk).status == JobStatus.QUEUED


# --- families ----------------------------------------------------------------------------------


def test_operators_create_families_with_checked_fields(operator_client, tenant):
    created = operator_client.post(
        "/api/v1/model-families/", {"tenant": "acme", "name": "gate-detector", "labels": LABELS}, format="json"
    )
    assert created.status_code == 201, created.json()
    assert created.json()["labels"] == LABELS
    duplicate = operator_client.post(
        "/api/v1/model-families/", {"tenant": "acme", "name": "gate-detector", "labels": LABELS}, format="json"
    )
    assert duplicate.status_code == 400 and "already has a family" in duplicate.json()["name"][0]
    for bad in ({"labels": []}, {"labels": ["a", "a"]}, {"name": "Not a slug!"}, {"tenant": "nobody"}):
        body = {"tenant": "acme", "name": "other", "labels": ["car"], **bad}
        assert operator_client.post("/api/v1/model-families/", body, format="json").status_code == 400, bad
    family_id = created.json()["id"]
    renamed = operator_client.patch(f"/api/v1/model-families/{family_id}/", {"name": "renamed"}, format="json")
    assert renamed.status_code == 400 and "cannot change" in renamed.json()["name"][0]
    described = operator_client.patch(f"/api/v1/model-families/{family_id}/", {"description": "gates"}, format="json")
    assert described.status_code == 200 and described.json()["description"] == "gates"
    assert ModelFamily.objects.get(pk=family_id).name == "gate-detector"


# --- uploads -----------------------------------------------------------------------------------


def test_an_operator_uploads_a_checkpoint(operator_client, family, checkpoint_bytes):
    response = _upload(operator_client, family, checkpoint_bytes, input_shape="1,3,128,160", notes="first")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["version"], body["input_shape"], body["notes"]) == (1, [1, 3, 128, 160], "first")
    assert body["blob_sha256"] == hashlib.sha256(checkpoint_bytes).hexdigest()
    assert body["created_by"] == "olga" and body["filename"] == "detector.pt"
    assert _upload(operator_client, family, checkpoint_bytes).json()["version"] == 2


@pytest.mark.parametrize(
    ("data", "fields", "field", "message"),
    [
        (os.urandom(5000), {}, "file", "not a PyTorch checkpoint"),
        (b"", {}, "file", "empty"),
        (None, {"input_shape": "1,3,100,100"}, "input_shape", "multiples of 16"),
        (None, {"input_shape": "big"}, "input_shape", "four integers"),
    ],
)
def test_bad_uploads_are_refused_and_store_nothing(
    operator_client, family, checkpoint_bytes, data, fields, field, message
):
    response = _upload(operator_client, family, checkpoint_bytes if data is None else data, **fields)
    assert response.status_code == 400
    assert message in " ".join(response.json()[field])
    assert ModelVersion.objects.count() == 0 and list(blob_store().digests()) == []


def test_a_checkpoint_for_other_labels_is_refused(operator_client, tenant, checkpoint_bytes):
    family = services.create_family(tenant, "three-classes", ["car", "person", "bike"])
    response = _upload(operator_client, family, checkpoint_bytes)
    assert response.status_code == 400 and "detects 2 class" in response.json()["file"][0]


def test_an_upload_over_the_limit_is_cut_off(operator_client, family, checkpoint_bytes, settings):
    # The body passes the Content-Length check but the file itself is over: the handler stops reading.
    settings.MODEL_UPLOAD_MAX_BYTES = len(checkpoint_bytes) - 1000
    response = _upload(operator_client, family, checkpoint_bytes)
    assert response.status_code == 413 and "MODEL_UPLOAD_MAX_BYTES" in response.json()["file"][0]
    assert ModelVersion.objects.count() == 0 and list(blob_store().digests()) == []


def test_a_declared_2_gb_upload_is_refused_before_its_body_is_read(operator_client, family):
    # The body is tiny: had anything tried to read the announced 2 GB, the test client's payload would raise.
    response = operator_client.post(
        "/api/v1/model-versions/",
        {"family": family.pk, "file": SimpleUploadedFile("huge.pt", b"x" * 100)},
        format="multipart",
        CONTENT_LENGTH=str(2 * 1024**3),
    )
    assert response.status_code == 413
    assert ModelVersion.objects.count() == 0


# --- jobs --------------------------------------------------------------------------------------


def test_operators_start_and_cancel_jobs(operator_client, model_version, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = operator_client.post(
            "/api/v1/compression-jobs/",
            {"model_version": model_version.pk, "preset": "3-bit", "config": {"admm_steps": 5}},
            format="json",
        )
    assert response.status_code == 202, response.json()
    assert len(callbacks) == 1  # the Celery task goes out when the transaction commits
    job = response.json()
    assert (job["status"], job["config"]["admm_steps"], job["package"]) == ("queued", 5, None)
    cancelled = operator_client.post(f"/api/v1/compression-jobs/{job['id']}/cancel/")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    again = operator_client.post(f"/api/v1/compression-jobs/{job['id']}/cancel/")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preset": "fp4"}, "preset"),
        ({"preset": "int8", "config": {"admm_steps": 5}}, "config"),
        ({"preset": "3-bit", "config": {"admm_steps": 0}}, "config"),
        ({"preset": "3-bit", "config": "fast"}, "config"),
        ({"preset": "3-bit", "model_version": 999999}, "model_version"),
    ],
)
def test_bad_job_requests_are_refused(operator_client, model_version, body, field):
    response = operator_client.post(
        "/api/v1/compression-jobs/", {"model_version": model_version.pk, **body}, format="json"
    )
    assert response.status_code == 400 and field in response.json()
    assert CompressionJob.objects.count() == 0


def test_jobs_filter_by_status_and_preset(viewer_client, model_version):
    services.start_compression_job(model_version, "int8", enqueue=False)
    services.cancel_job(services.start_compression_job(model_version, "data-free", enqueue=False))
    listed = viewer_client.get("/api/v1/compression-jobs/?status=cancelled").json()["results"]
    assert [job["preset"] for job in listed] == ["data-free"]
    assert [job["preset"] for job in viewer_client.get("/api/v1/compression-jobs/?preset=int8").json()["results"]] == [
        "int8"
    ]


# --- packages ----------------------------------------------------------------------------------


def test_a_tenants_key_downloads_the_encrypted_package(api_key_client, package):
    detail = api_key_client.get(f"/api/v1/packages/{package.pk}/").json()
    assert detail["download_url"].endswith(f"/api/v1/packages/{package.pk}/download/")
    assert detail["manifest"]["name"] == "lot-detector" and detail["signer_key_id"] == package.signer_key_id
    assert "sealed_content_key" not in detail
    response = api_key_client.get(f"/api/v1/packages/{package.pk}/download/", HTTP_ACCEPT="application/octet-stream")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert body == blob_store().read(package.blob_sha256)
    assert response["X-Content-SHA256"] == hashlib.sha256(body).hexdigest() == package.blob_sha256
    assert "attachment" in response["Content-Disposition"]


def test_a_package_whose_blob_is_gone_answers_410(viewer_client, package):
    blob_store().delete(package.blob_sha256)
    response = viewer_client.get(f"/api/v1/packages/{package.pk}/download/")
    assert response.status_code == 410 and "missing" in response.json()["detail"]


def test_signing_keys_are_published(api_key_client):
    body = api_key_client.get("/api/v1/signing-keys/").json()
    keyring = signing_keyring()
    assert body == {"active": keyring.active().key_id, "keys": keyring.export_public()}


def test_the_openapi_schema_documents_the_registry(viewer_client):
    schema = viewer_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("/api/v1/model-versions/", "/api/v1/compression-jobs/{id}/cancel/", "/api/v1/packages/{id}/download/"):
        assert path in schema["paths"], path
