"""Celery tasks of the MQTT bridge: drain the command outbox."""

from datetime import timedelta

from celery import shared_task
from celery.utils.log import get_task_logger

from fleet_server.devices.services import mark_commands_sent
from fleet_server.mqtt_bridge import outbox

logger = get_task_logger(__name__)


@shared_task(ignore_result=True)
def publish_outbox_task() -> int:
    """Publish what is due; returns how many were published. Beat runs it every OUTBOX_POLL_S too."""
    report = outbox.publish_pending()
    sent = [cid for cid in report.published if cid is not None]
    if sent:
        mark_commands_sent(sent)
    if report.published:
        logger.info("outbox: published %d message(s)", len(report.published))
    return len(report.published)


@shared_task(ignore_result=True)
def prune_outbox_task() -> int:
    return outbox.prune_published(timedelta(days=7))
