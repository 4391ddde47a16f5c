"""Celery tasks of the model registry: compression jobs, and the upkeep beat schedules (see CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from celery.utils.log import get_task_logger
from django.conf import settings

from fleet_server.registry import compression_jobs, services

logger = get_task_logger(__name__)


# acks_late: a message whose worker dies is delivered again; run_job skips a job that is no longer queued,
# and fail_lost_jobs ends the one that was running.
@shared_task(
    ignore_result=True,
    acks_late=True,
    soft_time_limit=settings.COMPRESSION_TIME_LIMIT_S,
    time_limit=settings.COMPRESSION_TIME_LIMIT_S + 60,
)
def run_compression_job_task(job_id: int) -> str | None:
    status = compression_jobs.run_job(job_id)
    logger.info("compression job %s: %s", job_id, status or "skipped (not queued)")
    return status


@shared_task(ignore_result=True)
def fail_lost_compression_jobs_task() -> int:
    count = services.fail_lost_jobs()
    if count:
        logger.warning("failed %d compression job(s) whose worker was lost", count)
    return count


@shared_task(ignore_result=True)
def collect_blob_garbage_task() -> int:
    deleted = services.collect_blob_garbage()
    if deleted:
        logger.info("deleted %d unreferenced blob(s)", len(deleted))
    return len(deleted)
