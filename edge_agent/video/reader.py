"""A camera reader: a video source run in its own thread, feeding a bounded queue that keeps the newest frames.

When inference is slower than the camera, the oldest queued frame is dropped rather than the camera stalling,
so the consumer always works on recent frames; every drop is counted for telemetry.
"""

import threading
import time
from collections import deque
from collections.abc import Iterator

from edge_agent.video.sources import Frame, VideoSource

DEFAULT_QUEUE_FRAMES = 2


class CameraReader:
    """Reads `source` in a daemon thread into a queue of at most `max_queue` frames, dropping the oldest."""

    def __init__(self, source: VideoSource, max_queue: int = DEFAULT_QUEUE_FRAMES, name: str = "camera"):
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue!r}")
        self.source = source
        self.name = name
        self._queue: deque[Frame] = deque(maxlen=max_queue)
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self.frames_read = 0
        self.frames_dropped = 0
        self.frames_delivered = 0
        self.error: BaseException | None = None
        self._finished = False

    def start(self) -> "CameraReader":
        if self._thread is not None:
            raise RuntimeError(f"camera reader {self.name} is already started")
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for frame in self.source.frames():
                with self._ready:
                    if len(self._queue) == self._queue.maxlen:
                        self.frames_dropped += 1
                    self._queue.append(frame)
                    self.frames_read += 1
                    self._ready.notify()
        except Exception as error:  # read() re-raises it to the consumer; stats() reports it
            self.error = error
        finally:
            with self._ready:
                self._finished = True
                self._ready.notify_all()

    def read(self, timeout: float | None = None) -> Frame | None:
        """The oldest queued frame; None when `timeout` passes first or the source has ended and the queue is empty.

        Raises the source's error once its frames are consumed if it ended with one.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ready:
            while not self._queue:
                if self._finished:
                    if self.error is not None:
                        raise self.error
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._ready.wait(remaining)
            self.frames_delivered += 1
            return self._queue.popleft()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Close the source and wait for the thread to end (a blocked stream read may take up to its timeout)."""
        self.source.close()
        if self._thread is not None:
            self._thread.join(timeout)

    def stats(self) -> dict:
        """Counters for telemetry: frames read from the source, dropped for a slow consumer, delivered, queued."""
        with self._ready:
            stats = {
                "frames_read": self.frames_read,
                "frames_dropped": self.frames_dropped,
                "frames_delivered": self.frames_delivered,
                "queued": len(self._queue),
                "running": self.running,
                "error": str(self.error) if self.error is not None else None,
            }
        reconnects = getattr(self.source, "reconnects", None)
        if reconnects is not None:
            stats["reconnects"] = reconnects
        return stats

    def __enter__(self) -> "CameraReader":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
