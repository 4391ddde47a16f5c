"""Publishes the event outbox to the broker in seq order, forgetting an event only once its PUBACK is in.

At least once on the wire: after a disconnect, a timeout or a restart, everything not yet acknowledged is sent
again from the outbox (the platform ingests idempotently by event_id). A sliding window keeps up to
`max_in_flight` events unacknowledged, so throughput is not one round trip per event.
"""

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import fleet_protocol as fp
from edge_agent.backoff import Backoff
from edge_agent.outbox import EventOutbox

logger = logging.getLogger(__name__)

# paho's default in-flight limit for QoS 1 is 20; more would only queue inside paho.
DEFAULT_MAX_IN_FLIGHT = 20


class EventPublisher(threading.Thread):
    """A daemon thread draining `outbox` through `publish(payload) -> paho MQTTMessageInfo` (QoS 1 on `events`).

    `connected()` says whether the MQTT session is up; nothing is published while it is not.
    """

    def __init__(
        self,
        outbox: EventOutbox,
        publish: Callable[[bytes], object],
        connected: Callable[[], bool],
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        ack_timeout_s: float = 10.0,
        idle_poll_s: float = 0.5,
        backoff: Backoff | None = None,
    ):
        super().__init__(name="event-publisher", daemon=True)
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        self.outbox = outbox
        self._publish = publish
        self._connected = connected
        self.max_in_flight = max_in_flight
        self.ack_timeout_s = ack_timeout_s
        self.idle_poll_s = idle_poll_s
        self._backoff = backoff or Backoff(base_s=0.2, max_s=5.0)
        self._stopping = threading.Event()
        self.published = 0  # PUBACKs received
        self.retries = 0  # times the window was abandoned and resent from the outbox
        self.last_error = ""

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        while not self._stopping.is_set():
            if not self._connected():
                self._stopping.wait(self.idle_poll_s)
                continue
            try:
                progressed = self._drain()
            except Exception as exc:  # a publisher that dies would silently stop every event: log and retry
                logger.exception("event publisher: unexpected error")
                self.last_error = f"{type(exc).__name__}: {exc}"
                progressed = False
            if progressed:
                self._backoff.reset()
            else:
                self.retries += 1
                self._stopping.wait(self._backoff.next_delay())

    def _drain(self) -> bool:
        """Publish until the outbox is empty or something fails; False after a failure (the caller backs off)."""
        window: deque[tuple[int, object]] = deque()
        last_queued = 0
        while not self._stopping.is_set():
            if not self._connected():
                self.last_error = "not connected"
                return False
            room = self.max_in_flight - len(window)
            if room > 0:
                for event in self.outbox.pending(room, after_seq=last_queued):
                    info = self._publish(fp.encode(fp.envelope(event)))
                    if getattr(info, "rc", 0) != 0:
                        self.last_error = f"publish refused (rc={info.rc})"
                        return False
                    window.append((event.seq, info))
                    last_queued = event.seq
            if not window:
                if self.outbox.wait_for_events(self.idle_poll_s, after_seq=last_queued):
                    continue
                return True
            if not self._settle(window):
                return False

    def _settle(self, window: deque) -> bool:
        """Wait for the oldest event's PUBACK, then forget every acknowledged event at the head of the window."""
        _, head = window[0]
        deadline = time.monotonic() + self.ack_timeout_s
        try:
            while not head.is_published():
                if self._stopping.is_set() or not self._connected() or time.monotonic() > deadline:
                    self.last_error = "no PUBACK (disconnected or timed out); resending from the outbox"
                    return False
                head.wait_for_publish(0.1)
        except (RuntimeError, ValueError) as exc:
            self.last_error = str(exc)
            return False
        acked = None
        while window and window[0][1].is_published():
            acked, _ = window.popleft()
            self.published += 1
        self.outbox.mark_sent(acked)
        return True
