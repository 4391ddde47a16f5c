"""Periodic upkeep of the device registry (scheduled by Celery beat, see CELERY_BEAT_SCHEDULE)."""

from celery import shared_task
from celery.utils.log import get_task_logger

from fleet_server.devices import services

logger = get_task_logger(__name__)


@shared_task(ignore_result=True)
def mark_silent_devices_offline_task() -> int:
    count = services.mark_silent_devices_offline()
    if count:
        logger.info("marked %d silent device(s) offline", count)
    return count


@shared_task(ignore_result=True)
def expire_commands_task() -> int:
    return services.expire_commands()


@shared_task(ignore_result=True)
def prune_telemetry_task() -> int:
    return services.prune_telemetry()
