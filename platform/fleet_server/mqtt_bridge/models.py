"""The transactional outbox: an MQTT message saved in the same transaction as the change it announces."""

from django.db import models
from django.utils import timezone


class OutboxMessage(models.Model):
    topic = models.CharField(max_length=255)
    payload = models.BinaryField()
    qos = models.PositiveSmallIntegerField(default=1)
    retain = models.BooleanField(default=False)
    # What the message is about (a command id), so its publication can be reported back.
    correlation_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="outbox_pending",
                condition=models.Q(published_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        state = "published" if self.published_at else f"pending ({self.attempts} attempts)"
        return f"{self.topic} #{self.pk}: {state}"
