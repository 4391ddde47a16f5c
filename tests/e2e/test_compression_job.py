"""A compression job end to end: REST upload, a real Celery worker on Redis, progress, the package, a lost worker.

The operator works over HTTP against the live server (session login, CSRF); the business unit downloads
the package with its API key and checks it the way a device does: decrypt, verify the signature with the
published keys, run the self-test on the reference executor.
"""

import http.cookiejar
import json
import os
import re
import signal
import time
import urllib.parse
import urllib.request
import uuid

import numpy as np
import pytest
from django.contrib.auth.models import Group, User

from fleet_server.registry import services
from fleet_server.registry.models import CompressionJob, JobStatus, Package
from model_store import reference
from model_store.crypto import decrypt_package, import_public_keys
from model_store.package import read_package
from smartpark.detector import DEFAULT_CHECKPOINT
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TINY_3_BIT = {
    "admm_steps": 12, "finetune_steps": 2, "batch_size": 1, "calibration_frames": 2,
    "eval_frames_per_condition": 0, "selftest_frames": 2,
}  # fmt: skip


class OperatorSession:
    """An operator in a browser-like session: logs in through the form, sends the CSRF token back."""

    def __init__(self, base_url: str, username: str, password: str):
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        login_page = self.opener.open(f"{base_url}/login/", timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
        form = urllib.parse.urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token})
        self.opener.open(urllib.request.Request(f"{base_url}/login/", data=form.encode()), timeout=10)

    def _csrf(self) -> str:
        return next(cookie.value for cookie in self.cookies if cookie.name == "csrftoken")

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        headers = {"X-CSRFToken": self._csrf(), "Accept": "application/json", "Content-Type": content_type}
        request = urllib.request.Request(self.base_url + path, data=body, method=method, headers=headers)
        with self.opener.open(request, timeout=60) as response:
            return response.status, json.loads(response.read())

    def get(self, path: str):
        return self.request("GET", path)[1]

    def post_json(self, path: str, payload: dict):
        return self.request("POST", path, json.dumps(payload).encode())

    def upload(self, path: str, fields: dict, file_name: str, data: bytes):
        boundary = uuid.uuid4().hex
        body = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        )
        body += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        body += data + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", path, body, f"multipart/form-data; boundary={boundary}")


@pytest.fixture
def operator(live_server, park):
    user = User.objects.create_user("olga", password="olga-password")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    return OperatorSession(live_server.url, "olga", "olga-password")


def _upload_detector(operator) -> dict:
    status, family = operator.post_json(
        "/api/v1/model-families/", {"tenant": "acme", "name": "lot-detector", "labels": ["vehicle", "person"]}
    )
    assert status == 201, family
    status, version = operator.upload(
        "/api/v1/model-versions/", {"family": family["id"]}, "detector.pt", DEFAULT_CHECKPOINT.read_bytes()
    )
    assert status == 201, version
    return version


def test_a_compression_job_runs_on_the_worker_and_yields_a_verified_package(
    operator, rest, registry_env, celery_worker_process
):
    # given: a worker, and the shipped detector uploaded through the API
    celery_worker_process(**registry_env)
    version = _upload_detector(operator)
    assert version["version"] == 1 and version["parameters"] > 0

    # when: the operator starts a short 3-bit job
    status, job = operator.post_json(
        "/api/v1/compression-jobs/", {"model_version": version["id"], "preset": "3-bit", "config": TINY_3_BIT}
    )
    assert status == 202 and job["status"] == "queued"

    # then: the job runs, its progress moves, and it ends with a package
    seen_steps = set()

    def finished():
        state = operator.get(f"/api/v1/compression-jobs/{job['id']}/")
        if state["status"] == "running":
            seen_steps.add(state["step"])
        return state if state["status"] in ("succeeded", "failed", "cancelled") else None

    final = wait_until(finished, timeout=240, interval=0.05, message="the job to finish")
    assert final["status"] == "succeeded", final["error"]
    assert len(seen_steps) >= 2, f"progress seen while running: {sorted(seen_steps)}"
    assert final["step"] == final["total"] and len(final["loss_curve"]) == 14
    assert final["report"]["compression_ratio"] > 5 and final["package"]

    # and: the business unit finds the package and downloads it with its key
    package = rest.get(f"/api/v1/packages/{final['package']}/")
    assert (package["family_name"], package["version"], package["codebook"]) == ("lot-detector", 1, "pow2-4")
    request = urllib.request.Request(package["download_url"], headers={"Authorization": f"Api-Key {rest.api_key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        ciphertext = response.read()
    assert len(ciphertext) == package["size_bytes"]

    # and: it opens the way a device opens it
    content_key = services.package_content_key(Package.objects.get(pk=package["id"]))
    trusted = import_public_keys(rest.get("/api/v1/signing-keys/")["keys"])
    opened = read_package(decrypt_package(ciphertext, content_key), trusted)
    assert opened.manifest.name == "lot-detector" and opened.manifest.compression["preset"] == "3-bit"
    model, selftest = opened.integer_model(), opened.selftest()
    outputs = reference.run(model, selftest[model.inputs[0]])
    for name in model.outputs:
        np.testing.assert_array_equal(outputs[name], selftest[name])


def test_a_job_whose_worker_is_killed_ends_failed_not_stuck(operator, registry_env, celery_worker_process):
    # given: a worker whose beat sweeps lost jobs quickly, running a long job
    celery_worker_process(**registry_env, COMPRESSION_HEARTBEAT_TIMEOUT_S="3")
    version = _upload_detector(operator)
    config = {**TINY_3_BIT, "admm_steps": 20_000}
    _, job = operator.post_json(
        "/api/v1/compression-jobs/", {"model_version": version["id"], "preset": "3-bit", "config": config}
    )
    running = wait_until(
        lambda: CompressionJob.objects.filter(pk=job["id"], status=JobStatus.RUNNING, step__gte=1).first(),
        timeout=120, interval=0.1, message="the job running",
    )  # fmt: skip

    # when: the process running it is killed (as the OOM killer would)
    pid = int(running.worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)

    # then: the sweep ends it as failed with the reason, and the redelivered message does not restart it
    failed = wait_until(
        lambda: CompressionJob.objects.filter(pk=job["id"]).exclude(status=JobStatus.RUNNING).first(),
        timeout=60, interval=0.2, message="the job to leave 'running'",
    )  # fmt: skip
    assert failed.status == JobStatus.FAILED
    assert failed.error.startswith("worker lost") and str(pid) in failed.error
    time.sleep(3)
    again = CompressionJob.objects.get(pk=job["id"])
    assert (again.status, again.started_at) == (JobStatus.FAILED, running.started_at)
    assert not Package.objects.exists()
