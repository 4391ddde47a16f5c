"""What the model registry does: families, checked uploads, compression jobs and their packages.

Views, the REST API, Celery tasks and management commands call these functions. Running a job (in
a worker) lives in ``compression_jobs``; this module queues, cancels and sweeps jobs.
"""

import logging
import os
import uuid
from datetime import datetime, timedelta
from typing import IO

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fleet_server.registry import checkpoints, presets
from fleet_server.registry.content_keys import open_content_key
from fleet_server.registry.models import (
    CompressionJob,
    JobStatus,
    ModelFamily,
    ModelKind,
    ModelTask,
    ModelVersion,
    Package,
)
from fleet_server.registry.storage import blob_store
from model_store.storage import BlobTooLarge

logger = logging.getLogger(__name__)

MAX_LABELS = checkpoints.MAX_CLASSES
MAX_LABEL_LENGTH = 64
UPLOAD_CHUNK_BYTES = 1024 * 1024
# A blob is stored a moment before the row that references it commits (an upload, a package): garbage
# collection leaves unreferenced blobs younger than this alone.
BLOB_GC_GRACE_S = 3600.0


class RegistryError(ValueError):
    """A request the registry refuses; the message says what was wrong and what to do."""


# --- families ------------------------------------------------------------------------------------


def check_labels(labels) -> list[str]:
    if isinstance(labels, str) or not isinstance(labels, list | tuple) or not labels:
        raise RegistryError('labels must be a non-empty list of class names, e.g. ["vehicle", "person"]')
    cleaned = []
    for label in labels:
        if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL_LENGTH or not label.isprintable():
            raise RegistryError(f"label {label!r} must be printable text of 1-{MAX_LABEL_LENGTH} characters")
        cleaned.append(label.strip())
    if len(set(cleaned)) != len(cleaned):
        raise RegistryError(f"labels must be unique, got {cleaned}")
    if len(cleaned) > MAX_LABELS:
        raise RegistryError(f"at most {MAX_LABELS} labels")
    return cleaned


def create_family(tenant, name: str, labels, *, task: str = ModelTask.DETECTION, description: str = "") -> ModelFamily:
    if task not in ModelTask.values:
        raise RegistryError(f"task must be one of {', '.join(ModelTask.values)}")
    labels = check_labels(labels)
    with transaction.atomic():
        if ModelFamily.objects.filter(tenant=tenant, name=name).exists():
            raise RegistryError(f"{tenant} already has a model family named {name!r}")
        return ModelFamily.objects.create(tenant=tenant, name=name, task=task, labels=labels, description=description)


# --- versions ------------------------------------------------------------------------------------


def register_version(
    family: ModelFamily,
    upload: str | IO[bytes],
    *,
    filename: str = "",
    input_shape=checkpoints.DEFAULT_INPUT_SHAPE,
    notes: str = "",
    created_by=None,
) -> ModelVersion:
    """Check an uploaded checkpoint (path or seekable binary file), store it and number it in its family.

    A file that does not load, build and run as a detector of the family's labels raises CheckpointError,
    one over MODEL_UPLOAD_MAX_BYTES RegistryError; neither stores anything.
    """
    limit = settings.MODEL_UPLOAD_MAX_BYTES
    if _file_size(upload) > limit:
        raise RegistryError(f"the file is larger than the limit of {limit:,} bytes (MODEL_UPLOAD_MAX_BYTES)")
    info = checkpoints.inspect_checkpoint(upload, labels=family.labels, input_shape=input_shape)
    try:
        digest = _store_upload(upload)
    except BlobTooLarge:  # the file grew since it was checked
        raise RegistryError(f"the file is larger than the limit of {limit:,} bytes (MODEL_UPLOAD_MAX_BYTES)") from None
    size = blob_store().size(digest)
    with transaction.atomic():
        family = ModelFamily.objects.select_for_update().get(pk=family.pk)
        latest = family.versions.order_by("-version").values_list("version", flat=True).first() or 0
        version = ModelVersion.objects.create(
            family=family,
            version=latest + 1,
            kind=ModelKind.CHECKPOINT,
            blob_sha256=digest,
            size_bytes=size,
            filename=filename[:255],
            input_shape=list(info.input_shape),
            input_spec={"shape": list(info.input_shape), **checkpoints.DETECTOR_INPUT_SPEC},
            architecture=info.architecture,
            parameters=info.parameters,
            fp32_bytes=info.fp32_bytes,
            notes=notes,
            created_by=created_by,
        )
    logger.info("registered %s (%d parameters, blob %s)", version, info.parameters, digest[:12])
    return version


def _file_size(upload: str | IO[bytes]) -> int:
    if isinstance(upload, str):
        return os.path.getsize(upload)
    upload.seek(0, os.SEEK_END)
    size = upload.tell()
    upload.seek(0)
    return size


def _store_upload(upload: str | IO[bytes]) -> str:
    if isinstance(upload, str):
        with open(upload, "rb") as file:
            return _store_upload(file)
    upload.seek(0)
    chunks = iter(lambda: upload.read(UPLOAD_CHUNK_BYTES), b"")
    return blob_store().put_stream(chunks, max_bytes=settings.MODEL_UPLOAD_MAX_BYTES)


# --- compression jobs ----------------------------------------------------------------------------


def start_compression_job(
    model_version: ModelVersion, preset: str, overrides: dict | None = None, *, created_by=None, enqueue: bool = True
) -> CompressionJob:
    """Queue a job; its Celery task is sent once the transaction commits (with ``enqueue``)."""
    config = presets.resolve_config(preset, overrides)
    job = CompressionJob.objects.create(
        model_version=model_version,
        preset=preset,
        config=config,
        created_by=created_by,
        celery_task_id=str(uuid.uuid4()) if enqueue else "",
        log=[_log_line(f"queued: preset {preset}, {_describe(config)}")],
    )
    if enqueue:
        transaction.on_commit(lambda: _send_job(job.pk, job.celery_task_id))
    return job


def _send_job(job_id: int, task_id: str) -> None:
    """Hand the job to Celery; if the broker cannot take it, the job fails now instead of waiting forever."""
    from fleet_server.registry.tasks import run_compression_job_task

    try:
        run_compression_job_task.apply_async(args=[job_id], task_id=task_id)
    except Exception as error:  # kombu and redis raise many kinds for an unreachable broker
        logger.exception("could not queue compression job %s", job_id)
        reason = f"could not queue the job (is the Celery broker reachable?): {error}"[:2000]
        CompressionJob.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
            status=JobStatus.FAILED, error=reason, finished_at=timezone.now()
        )


def cancel_job(job: CompressionJob) -> CompressionJob:
    """A queued job is cancelled at once; a running one when its worker next reports progress."""
    now = timezone.now()
    if CompressionJob.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
        status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now, error="cancelled before it started"
    ):
        job.refresh_from_db()
        return job
    if not CompressionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True):
        job.refresh_from_db()
        raise RegistryError(f"job {job.pk} is already {job.status}: there is nothing to cancel")
    job.refresh_from_db()
    return job


def fail_lost_jobs(now: datetime | None = None) -> int:
    """Running jobs whose worker stopped beating (killed, out of memory, host lost) end as failed."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.COMPRESSION_HEARTBEAT_TIMEOUT_S)
    lost = CompressionJob.objects.filter(status=JobStatus.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    count = 0
    for job in lost:
        reason = (
            f"worker lost: no heartbeat from {job.worker or 'its worker'} since "
            f"{(job.heartbeat_at or job.started_at):%Y-%m-%d %H:%M:%S} UTC"
        )
        still_lost = CompressionJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING, heartbeat_at=job.heartbeat_at)
        count += still_lost.update(
            status=JobStatus.FAILED, error=reason, finished_at=now, log=[*job.log, _log_line(reason)]
        )
        logger.warning("compression job %s: %s", job.pk, reason)
    return count


def _describe(config: dict) -> str:
    return ", ".join(f"{name} {value}" for name, value in config.items())


def _log_line(text: str) -> str:
    return f"{timezone.now():%H:%M:%S} {text}"


# --- packages and blobs --------------------------------------------------------------------------


def package_content_key(package: Package) -> bytes:
    """The AES-256-GCM key that opens the package's ciphertext (to be wrapped for each device)."""
    return open_content_key(package.sealed_content_key, package.blob_sha256)


def referenced_blobs() -> set[str]:
    versions = ModelVersion.objects.values_list("blob_sha256", flat=True)
    packages = Package.objects.values_list("blob_sha256", flat=True)
    return set(versions) | set(packages)


def collect_blob_garbage(min_age_s: float = BLOB_GC_GRACE_S) -> list[str]:
    """Delete blobs no version or package row references (left by failed uploads or rolled-back jobs)."""
    return blob_store().collect_garbage(referenced_blobs(), min_age_s=min_age_s)
