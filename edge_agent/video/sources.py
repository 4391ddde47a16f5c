"""Video sources: where the agent's frames come from, each yielding (timestamp, RGB uint8 (H, W, 3) frame).

Timestamps are seconds on the source's own clock from its first frame: scene time for synthetic sequences,
frame index / fps for files and image folders, wall time since opening for live streams. With `size` (height,
width) every frame is resized to the model's input size (stretched, not letterboxed: the detector is trained
on full 4:3 frames). OpenCV is imported only by the sources that need it.
"""

import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge_agent.backoff import Backoff

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
DEFAULT_FILE_FPS = 25.0
STREAM_OPEN_TIMEOUT_MS = 5000
STREAM_READ_TIMEOUT_MS = 5000


class Frame(NamedTuple):
    timestamp: float
    image: np.ndarray


class VideoSourceError(RuntimeError):
    """A source cannot deliver frames; the message names the source and what to check."""


class VideoSource(ABC):
    """A source of RGB frames. Iterate it (or call `frames()`); `close()` from any thread ends the iteration."""

    def __init__(self, size: tuple[int, int] | None = None):
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"size is (height, width) in pixels, got {size!r}")
        self.size = tuple(size) if size is not None else None
        self._closed = threading.Event()

    @abstractmethod
    def frames(self) -> Iterator[Frame]: ...

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def close(self) -> None:
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def describe(self) -> str:
        return type(self).__name__

    def _fit(self, image: np.ndarray) -> np.ndarray:
        if self.size is None or image.shape[:2] == self.size:
            return image
        return resize(image, self.size)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An (H, W, 3) frame resized to (height, width): area averaging when shrinking, bilinear when enlarging."""
    import cv2

    height, width = size
    shrinking = height * width < image.shape[0] * image.shape[1]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


class _Pacer:
    """Sleeps until frame n's due time (start + n / fps) when real time is asked for; wakes early on close."""

    def __init__(self, fps: float, realtime: bool, closed: threading.Event, clock=time.monotonic):
        self.interval = 1.0 / fps
        self.realtime = realtime
        self.closed = closed
        self.clock = clock
        self.start = clock()
        self.count = 0

    def wait(self) -> None:
        if self.realtime:
            self.closed.wait(max(0.0, self.start + self.count * self.interval - self.clock()))
        self.count += 1


def _check_fps(fps: float) -> float:
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return float(fps)


class SyntheticSource(VideoSource):
    """Rendered smart-park sequences (`smartpark.scenes.sequences`): the same seed gives the same frames.

    Each loop renders the next sequence (seed, seed + 1, ...) so a looping camera does not replay one clip;
    with `loop=False` it ends after one sequence. `realtime` paces frames at `fps`, otherwise as fast as they
    render. With `replay=True` every loop replays the same sequence: the same view, so the zones of its
    scene configuration (`scene_config()`) stay right, which is what a camera on a pole sees; its rendered
    frames are kept in memory after the first pass (about 70 MB a minute at 5 fps), so a replaying camera
    costs no rendering.
    """

    def __init__(
        self,
        seed: int,
        *,
        fps: float = 5.0,
        sequence_s: float = 60.0,
        loop: bool = True,
        realtime: bool = True,
        size: tuple[int, int] | None = None,
        condition: str | None = None,
        replay: bool = False,
        camera: str = "cam-1",
        view: str | None = None,
    ):
        super().__init__(size)
        self.seed = seed
        self.replay = replay
        self.camera = camera
        self.view = view
        self._cached: list[Frame] = []
        self.fps = _check_fps(fps)
        if not sequence_s > 0:
            raise ValueError(f"sequence_s must be positive, got {sequence_s!r}")
        self.sequence_s = sequence_s
        self.loop = loop
        self.realtime = realtime
        self.condition = condition

    def frames(self) -> Iterator[Frame]:
        pacer = _Pacer(self.fps, self.realtime, self._closed)
        seed = self.seed
        offset = 0.0
        while not self.closed:
            if self.replay and self._cached:
                rendered = iter(self._cached)
            else:
                sequence = self._sequence(seed)
                rendered = (Frame(frame.t, self._fit(frame.image)) for frame in sequence.frames())
            for frame in rendered:
                if self.replay and len(self._cached) < round(self.sequence_s * self.fps):
                    self._cached.append(frame)
                pacer.wait()
                if self.closed:
                    return
                yield Frame(offset + frame.timestamp, frame.image)
            if not self.loop:
                return
            if not self.replay:
                seed += 1
            offset += round(self.sequence_s * self.fps) / self.fps

    def _sequence(self, seed: int):
        from smartpark.scenes.sequences import generate_sequence

        return generate_sequence(
            seed, duration_s=self.sequence_s, fps=self.fps, condition=self.condition, camera=self.camera, view=self.view
        )

    def scene_config(self):
        """The zones and lines of this camera's view (the first sequence's; every loop's with `replay`)."""
        return self._sequence(self.seed).config

    def describe(self) -> str:
        return f"synthetic scenes from seed {self.seed} at {self.fps:g} fps"


class FileSource(VideoSource):
    """A video file decoded by OpenCV (FFmpeg): mp4, avi, mkv, ... Timestamps are frame index / the file's fps."""

    def __init__(
        self,
        path: str | Path,
        *,
        loop: bool = False,
        realtime: bool = False,
        size: tuple[int, int] | None = None,
    ):
        super().__init__(size)
        self.path = Path(path)
        self.loop = loop
        self.realtime = realtime

    def frames(self) -> Iterator[Frame]:
        import cv2

        if not self.path.is_file():
            raise VideoSourceError(f"video file {self.path}: no such file")
        index = 0
        pacer = None
        while not self.closed:
            capture = cv2.VideoCapture(str(self.path))
            try:
                if not capture.isOpened():
                    raise VideoSourceError(f"video file {self.path}: OpenCV cannot open it (not a video it can decode)")
                fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FILE_FPS
                pacer = pacer or _Pacer(fps, self.realtime, self._closed)
                first = index
                while not self.closed:
                    ok, bgr = capture.read()
                    if not ok:
                        break
                    pacer.wait()
                    yield Frame(index / fps, self._fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
                    index += 1
            finally:
                capture.release()
            if index == first:
                raise VideoSourceError(f"video file {self.path}: no frame could be decoded")
            if not self.loop:
                return

    def describe(self) -> str:
        return f"video file {self.path}"


class ImageFolderSource(VideoSource):
    """The images of a folder (png, jpg, bmp) in name order, as frames at `fps`."""

    def __init__(
        self,
        folder: str | Path,
        *,
        fps: float = 5.0,
        loop: bool = False,
        realtime: bool = False,
        size: tuple[int, int] | None = None,
    ):
        super().__init__(size)
        self.folder = Path(folder)
        self.fps = _check_fps(fps)
        self.loop = loop
        self.realtime = realtime

    def paths(self) -> list[Path]:
        if not self.folder.is_dir():
            raise VideoSourceError(f"image folder {self.folder}: no such folder")
        paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise VideoSourceError(f"image folder {self.folder}: no {', '.join(IMAGE_SUFFIXES)} files in it")
        return paths

    def frames(self) -> Iterator[Frame]:
        import cv2

        paths = self.paths()
        pacer = _Pacer(self.fps, self.realtime, self._closed)
        index = 0
        while not self.closed:
            for path in paths:
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise VideoSourceError(f"image folder {self.folder}: {path.name} is not an image OpenCV can read")
                pacer.wait()
                if self.closed:
                    return
                yield Frame(index / self.fps, self._fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
                index += 1
            if not self.loop:
                return

    def describe(self) -> str:
        return f"image folder {self.folder}"


class StreamSource(VideoSource):
    """A live RTSP or HTTP (MJPEG, HLS) camera via OpenCV, reopened with back-off whenever it fails.

    `max_attempts` consecutive failed opens (None: retry forever) end the iteration with VideoSourceError;
    a frame read successfully resets the count. `reconnects` counts every reopen, for telemetry.
    """

    def __init__(
        self,
        url: str,
        *,
        size: tuple[int, int] | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        open_timeout_ms: int = STREAM_OPEN_TIMEOUT_MS,
    ):
        super().__init__(size)
        if not re.match(r"(rtsps?|https?)://", url):
            raise ValueError(f"stream URL must start with rtsp://, rtsps://, http:// or https://, got {redact(url)!r}")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts is None (retry forever) or >= 1, got {max_attempts!r}")
        self.url = url
        self.backoff = backoff or Backoff(base_s=1.0, max_s=30.0)
        self.max_attempts = max_attempts
        self.open_timeout_ms = open_timeout_ms
        self.reconnects = 0
        self.failed_opens = 0
        self.last_error = ""

    def frames(self) -> Iterator[Frame]:
        import cv2

        started = None
        failures = 0
        while not self.closed:
            timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.open_timeout_ms]
            timeouts += [cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.open_timeout_ms]
            capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, timeouts)
            try:
                delivered = False
                if capture.isOpened():
                    while not self.closed:
                        ok, bgr = capture.read()
                        if not ok:
                            self.last_error = "the stream stopped delivering frames"
                            break
                        now = time.monotonic()
                        started = now if started is None else started
                        delivered = True
                        failures = 0
                        self.backoff.reset()
                        yield Frame(now - started, self._fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
                else:
                    self.failed_opens += 1
                    self.last_error = "OpenCV could not open the stream"
            finally:
                capture.release()
            if self.closed:
                return
            failures += 0 if delivered else 1
            if self.max_attempts is not None and failures >= self.max_attempts:
                raise VideoSourceError(
                    f"stream {redact(self.url)}: {self.last_error} after {failures} attempts; "
                    "check the URL, the credentials and that the camera is reachable from this device"
                )
            self.reconnects += 1
            self._closed.wait(self.backoff.next_delay())

    def describe(self) -> str:
        return f"stream {redact(self.url)}"


def redact(url: str) -> str:
    """A URL without its user:password, for messages and logs."""
    return re.sub(r"^([a-z]+://)[^/@]*@", r"\1***@", url)
