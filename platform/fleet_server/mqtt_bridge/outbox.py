"""Enqueue MQTT messages inside a transaction; publish them later, in order, with retries.

A message saved while the broker is down stays pending and is published by the next run of
``publish_outbox_task`` after the broker returns; nothing is lost and nothing is published for
a transaction that rolled back.
"""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fleet_server.mqtt_bridge.connection import BlockingPublisher, BrokerUnavailable
from fleet_server.mqtt_bridge.models import OutboxMessage

logger = logging.getLogger(__name__)


def enqueue(topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, correlation_id=None) -> OutboxMessage:
    """Save a message to publish; call inside the transaction of the change it belongs to."""
    message = OutboxMessage.objects.create(
        topic=topic, payload=payload, qos=qos, retain=retain, correlation_id=correlation_id
    )
    transaction.on_commit(_request_publish, robust=True)
    return message


def _request_publish() -> None:
    # Publish right away instead of waiting for the next beat tick; if the task queue is down
    # the periodic run still picks the message up.
    from fleet_server.mqtt_bridge.tasks import publish_outbox_task

    publish_outbox_task.delay()


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=min(settings.OUTBOX_RETRY_MAX_S, 2 ** max(attempts - 1, 0)))


@dataclass
class PublishReport:
    published: list[uuid.UUID | None] = field(default_factory=list)
    failed: int = 0
    error: str = ""


def publish_pending(limit: int = 200) -> PublishReport:
    """Publish due messages oldest first; stop at the first failure so a device never sees them out of order."""
    report = PublishReport()
    now = timezone.now()
    with transaction.atomic():
        # SKIP LOCKED lets several workers drain the outbox without publishing a row twice.
        batch = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True, next_attempt_at__lte=now)
            .order_by("id")[:limit]
        )
        if not batch:
            return report
        done = 0
        try:
            with BlockingPublisher() as publisher:
                for message in batch:
                    publisher.publish(message.topic, bytes(message.payload), message.qos, message.retain)
                    message.published_at = timezone.now()
                    report.published.append(message.correlation_id)
                    done += 1
        except BrokerUnavailable as exc:
            report.error = str(exc)
            for message in batch[done:]:
                message.attempts += 1
                message.last_error = report.error[:500]
                message.next_attempt_at = now + retry_delay(message.attempts)
            report.failed = len(batch) - done
            logger.warning("outbox: %d published, %d pending: %s", done, report.failed, report.error)
        OutboxMessage.objects.bulk_update(batch, ["published_at", "attempts", "last_error", "next_attempt_at"])
    return report


def pending_count() -> int:
    return OutboxMessage.objects.filter(published_at__isnull=True).count()


def prune_published(older_than: timedelta) -> int:
    deleted, _ = OutboxMessage.objects.filter(published_at__lt=timezone.now() - older_than).delete()
    return deleted
