"""Families, checked uploads, job bookkeeping (queue, cancel, lost workers) and blob garbage collection."""

import io
import os
import subprocess
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from fleet_server.registry import services
from fleet_server.registry.checkpoints import CheckpointError
from fleet_server.registry.models import CompressionJob, JobStatus, ModelVersion
from fleet_server.registry.presets import PresetError
from fleet_server.registry.storage import blob_store
from tests.conftest import manage


def test_versions_are_numbered_per_family_and_stored_by_digest(family, other_family, checkpoint_bytes):
    first = services.register_version(family, io.BytesIO(checkpoint_bytes), filename="a.pt")
    second = services.register_version(
        family, io.BytesIO(checkpoint_bytes), filename="b.pt", input_shape=(1, 3, 64, 64)
    )
    rival = services.register_version(other_family, io.BytesIO(checkpoint_bytes))
    assert (first.version, second.version, rival.version) == (1, 2, 1)
    assert first.blob_sha256 == second.blob_sha256  # same bytes, stored once
    assert blob_store().read(first.blob_sha256) == checkpoint_bytes
    assert first.size_bytes == len(checkpoint_bytes)
    assert second.input_spec["shape"] == [1, 3, 64, 64] and second.input_spec["dtype"] == "uint8"
    assert first.fp32_bytes == 4 * first.parameters


def test_a_refused_upload_stores_nothing(family):
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        services.register_version(family, io.BytesIO(os.urandom(4096)))
    assert ModelVersion.objects.count() == 0
    assert list(blob_store().digests()) == []


def test_an_upload_over_the_limit_is_refused_before_loading(family, checkpoint_bytes, settings):
    settings.MODEL_UPLOAD_MAX_BYTES = len(checkpoint_bytes) - 1
    with pytest.raises(services.RegistryError, match="larger than the limit"):
        services.register_version(family, io.BytesIO(checkpoint_bytes))
    assert ModelVersion.objects.count() == 0
    assert list(blob_store().digests()) == []


def test_family_names_are_unique_per_tenant_and_labels_are_checked(tenant, other_tenant, family):
    with pytest.raises(services.RegistryError, match="already has a model family"):
        services.create_family(tenant, "lot-detector", ["vehicle"])
    assert services.create_family(other_tenant, "lot-detector", ["vehicle"]).tenant == other_tenant
    for labels in ([], "vehicle", ["a", "a"], ["", "b"], [3]):
        with pytest.raises(services.RegistryError):
            services.create_family(tenant, "other", labels)


def test_a_job_is_queued_with_its_resolved_config_and_sent_on_commit(model_version, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = services.start_compression_job(model_version, "3-bit", {"admm_steps": 7})
    assert len(callbacks) == 1
    assert job.status == JobStatus.QUEUED and job.celery_task_id
    assert job.config["admm_steps"] == 7 and job.config["finetune_steps"] == 100
    with pytest.raises(PresetError):
        services.start_compression_job(model_version, "3-bit", {"admm_steps": -1})
    assert CompressionJob.objects.count() == 1


def test_cancel_a_queued_job_ends_it_a_running_one_is_asked(model_version):
    queued = services.start_compression_job(model_version, "int8", enqueue=False)
    assert services.cancel_job(queued).status == JobStatus.CANCELLED
    running = services.start_compression_job(model_version, "int8", enqueue=False)
    CompressionJob.objects.filter(pk=running.pk).update(status=JobStatus.RUNNING)
    running = services.cancel_job(running)
    assert running.status == JobStatus.RUNNING and running.cancel_requested
    with pytest.raises(services.RegistryError, match="already cancelled"):
        services.cancel_job(queued)


def test_running_jobs_without_a_heartbeat_fail_as_worker_lost(model_version, settings):
    settings.COMPRESSION_HEARTBEAT_TIMEOUT_S = 60
    now = timezone.now()
    jobs = {name: services.start_compression_job(model_version, "int8", enqueue=False) for name in "abcd"}
    CompressionJob.objects.filter(pk=jobs["a"].pk).update(
        status=JobStatus.RUNNING, heartbeat_at=now - timedelta(seconds=61), worker="host:1"
    )
    CompressionJob.objects.filter(pk=jobs["b"].pk).update(status=JobStatus.RUNNING, heartbeat_at=now)
    CompressionJob.objects.filter(pk=jobs["c"].pk).update(
        status=JobStatus.RUNNING, heartbeat_at=None, started_at=now - timedelta(seconds=120)
    )
    assert services.fail_lost_jobs(now) == 2
    states = {name: CompressionJob.objects.get(pk=job.pk) for name, job in jobs.items()}
    assert states["a"].status == JobStatus.FAILED and states["a"].error.startswith("worker lost")
    assert "host:1" in states["a"].error and states["a"].finished_at == now
    assert states["c"].status == JobStatus.FAILED
    assert states["b"].status == JobStatus.RUNNING
    assert states["d"].status == JobStatus.QUEUED


def test_garbage_collection_keeps_referenced_and_young_blobs(model_version):
    store = blob_store()
    orphan = store.put_bytes(b"left by an upload whose row never committed")
    assert services.collect_blob_garbage() == []  # young: it may be about to be referenced
    past = time.time() - 2 * services.BLOB_GC_GRACE_S
    os.utime(store.path(orphan), (past, past))
    os.utime(store.path(model_version.blob_sha256), (past, past))
    assert services.collect_blob_garbage() == [orphan]
    assert store.exists(model_version.blob_sha256) and not store.exists(orphan)


@pytest.mark.integration
def test_a_job_the_broker_cannot_take_fails_with_the_reason(model_version, platform_env):
    # A platform process whose broker is a port nothing listens on queues a job.
    env = {**platform_env, "CELERY_BROKER_URL": "redis://127.0.0.1:1/0"}
    code = (
        "from fleet_server.registry import services; from fleet_server.registry.models import ModelVersion; "
        f"services.start_compression_job(ModelVersion.objects.get(pk={model_version.pk}), 'int8')"
    )
    result = subprocess.run(manage("shell", "-c", code), env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    job = CompressionJob.objects.get()
    assert job.status == JobStatus.FAILED and "could not queue the job" in job.error
    assert "Connection refused" in job.error or "111" in job.error, job.error
