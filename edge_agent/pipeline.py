"""The camera pipeline: camera readers → one inference worker (batched runtime, decode, tracker + rules) → outbox.

One reader thread per camera keeps the newest frames; one worker batches frames from every camera through the
active runtime (a box has few cores: one inference at a time, batched, uses them best), decodes the outputs
with `smartpark.decode` and runs each camera's `SceneAnalytics`. Events get wall-clock times from each
camera's first frame and go into the durable `EventOutbox`. `activate` swaps the model and the scene configs
atomically between two batches; an error in one frame is counted and logged, never fatal.
"""

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime

import numpy as np

import fleet_protocol as fp
from edge_agent.outbox import EventOutbox
from edge_agent.runtimes import Runtime, create_runtime, nchw_batch
from edge_agent.video import CameraReader, VideoSource, resize
from model_store.package import Package
from smartpark.analytics import SceneAnalytics
from smartpark.decode import decode
from smartpark.events import Event
from smartpark.geometry import SceneConfig

logger = logging.getLogger(__name__)

FPS_WINDOW_S = 10.0
IDLE_WAIT_S = 0.01
MAX_ATTRIBUTES = 16  # fp.EventBody's limit


@dataclass
class _Active:
    """What `activate` swaps in as one unit: a loaded runtime and one analytics per configured camera."""

    runtime: Runtime
    analytics: dict[str, SceneAnalytics]
    model: str
    model_version: int
    scene_version: int


class Pipeline:
    """Detection and analytics for a device's cameras; `start`, `activate(...)`, `stop`.

    `cameras` maps the camera id (as in events and telemetry) to its source; `runtime_options` maps a runtime
    name to its constructor's options (e.g. ``{"cpu-int8": {"threads": 2}}``). Frames are resized to the model's
    input; boxes are scaled back to the camera's frame, the pixels its scene config is drawn in.
    """

    def __init__(
        self,
        cameras: dict[str, VideoSource],
        outbox: EventOutbox,
        *,
        runtime_options: dict[str, dict] | None = None,
        batch_size: int = 4,
        queue_frames: int = 2,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.outbox = outbox
        self.runtime_options = dict(runtime_options or {})
        self.batch_size = batch_size
        self.readers = {camera: CameraReader(source, queue_frames, name=camera) for camera, source in cameras.items()}
        self._active: _Active | None = None
        # Held by the worker for a whole batch and by `activate` for the swap: a runtime is never closed mid-batch.
        self._swap = threading.Lock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._clock_offsets: dict[str, float] = {}  # wall time minus source time, per camera
        self._stats_lock = threading.Lock()
        self._batches: deque[tuple[float, int]] = deque()  # (monotonic time, frames) over the last window
        self._camera_frames: dict[str, deque[float]] = {camera: deque() for camera in cameras}
        self._in_batch = 0
        self.frames = 0
        self.errors = 0
        self.detections = 0
        self.events = 0

    # --- control ---

    def activate(
        self,
        package: Package | None,
        runtime: str,
        scene_configs: dict[str, SceneConfig],
        *,
        model: str = "",
        model_version: int = 0,
        scene_version: int = 0,
    ) -> None:
        """Load `package` on `runtime` and swap it in with fresh analytics per camera; None stops detecting.

        The new runtime is loaded before the swap, so a package that fails to load raises here and leaves the
        running one in place. Cameras without a scene config are read but not analysed.
        """
        new = None
        if package is not None:
            unknown = sorted(set(scene_configs) - set(self.readers))
            if unknown:
                raise ValueError(f"scene configs for unknown cameras {unknown}; cameras are {sorted(self.readers)}")
            engine = create_runtime(runtime, **self.runtime_options.get(runtime, {}))
            engine.load(package)
            analytics = {camera: self._analytics(camera, config) for camera, config in scene_configs.items()}
            new = _Active(engine, analytics, model or package.manifest.name, model_version, scene_version)
        with self._swap:
            old, self._active = self._active, new
        if old is not None:
            old.runtime.close()

    def _analytics(self, camera: str, config: SceneConfig) -> SceneAnalytics:
        offset = self._clock_offsets.get(camera)
        clock_start = datetime.fromtimestamp(offset if offset is not None else time.time()).astimezone()
        return SceneAnalytics(config, clock_start=clock_start)

    def start(self) -> "Pipeline":
        if self._worker is not None:
            raise RuntimeError("the pipeline is already started")
        for reader in self.readers.values():
            reader.start()
        self._worker = threading.Thread(target=self._run, name="inference", daemon=True)
        self._worker.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for reader in self.readers.values():
            reader.stop(timeout)
        if self._worker is not None:
            self._worker.join(timeout)
        with self._swap:
            active, self._active = self._active, None
        if active is not None:
            active.runtime.close()

    # --- the worker ---

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            if not batch:
                self._stop.wait(IDLE_WAIT_S)
                continue
            with self._swap:
                self._process(batch)

    def _take_batch(self) -> list[tuple[str, object]]:
        """Up to `batch_size` queued frames, taking one per camera in turn so every camera gets its share."""
        batch = []
        while len(batch) < self.batch_size:
            taken = len(batch)
            for camera, reader in self.readers.items():
                if len(batch) == self.batch_size:
                    break
                try:
                    frame = reader.read(timeout=0)
                except Exception:  # the source ended with an error: stats() reports it, the others go on
                    frame = None
                if frame is not None:
                    batch.append((camera, frame))
            if len(batch) == taken:
                break
        return batch

    def _process(self, batch: list[tuple[str, object]]) -> None:
        now = time.monotonic()
        with self._stats_lock:
            self._in_batch = len(batch)
            self.frames += len(batch)
            self._batches.append((now, len(batch)))
            for camera, frame in batch:
                self._camera_frames[camera].append(now)
                self._clock_offsets.setdefault(camera, time.time() - frame.timestamp)
        try:
            active = self._active
            if active is None:
                return
            batch = [(camera, frame) for camera, frame in batch if self._usable(camera, frame.image)]
            if not batch:
                return
            try:
                found = self._detect(active.runtime, [frame.image for _, frame in batch])
            except Exception:
                self._count_error("inference failed on a batch of %d frames", len(batch))
                return
            events = []
            for (camera, frame), detections in zip(batch, found, strict=True):
                self.detections += len(detections)
                analytics = active.analytics.get(camera)
                if analytics is None:
                    continue
                try:
                    produced = analytics.update(frame.timestamp, detections)
                    events += [self._event_body(camera, event, active) for event in produced]
                except Exception:
                    self._count_error("analytics failed on a frame of camera %s", camera)
            if events:
                try:
                    self.outbox.add(events)
                    self.events += len(events)
                except Exception:
                    self._count_error("could not store %d events in the outbox", len(events))
        finally:
            with self._stats_lock:
                self._in_batch = 0

    def _usable(self, camera: str, image) -> bool:
        """A frame the runtime can take: (H, W, 3) uint8 RGB. Anything else is one error, not a failed batch."""
        image = np.asarray(image)
        if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 0:
            return True
        with self._stats_lock:
            self.errors += 1
        logger.warning(
            "pipeline: camera %s gave a %s %s frame, not (H, W, 3) uint8 RGB", camera, image.dtype, image.shape
        )
        return False

    def _detect(self, runtime: Runtime, images: list[np.ndarray]) -> list:
        """Detections per image, in that image's pixels (the model sees them resized to its input)."""
        _, in_h, in_w = runtime.input_shape
        fitted = [image if image.shape[:2] == (in_h, in_w) else resize(image, (in_h, in_w)) for image in images]
        heatmap, log_size, offset = runtime.infer(nchw_batch(fitted)).values()
        found = decode(heatmap, log_size, offset, image_size=(in_h, in_w))
        scaled = []
        for image, detections in zip(images, found, strict=True):
            height, width = image.shape[:2]
            if (height, width) != (in_h, in_w):
                scale = np.array([width / in_w, height / in_h, width / in_w, height / in_h], np.float32)
                detections = type(detections)(detections.boxes * scale, detections.scores, detections.labels)
            scaled.append(detections)
        return scaled

    def _event_body(self, camera: str, event: Event, active: _Active) -> dict:
        offset = self._clock_offsets[camera]
        attributes = {str(k): _plain(v) for k, v in list(event.attributes.items())[:MAX_ATTRIBUTES]}
        return {
            "event_id": event.event_id,
            "rule": event.rule.value,
            "camera": camera,
            "zone": event.zone,
            "start": max(0.0, event.start + offset),
            "end": None if event.end is None else max(0.0, event.end + offset),
            "confidence": min(1.0, max(0.0, float(event.confidence))),
            "attributes": attributes,
            "model": active.model,
            "model_version": active.model_version,
            "scene_version": active.scene_version,
        }

    def _count_error(self, message: str, *args) -> None:
        with self._stats_lock:
            self.errors += 1
            errors = self.errors
        # The first errors in full, then a reminder now and then: a broken camera must not flood the log.
        if errors <= 5 or errors % 100 == 0:
            logger.exception("pipeline: " + message + " (%d errors so far)", *args, errors)

    # --- reporting ---

    def _rate(self, times: deque, now: float, counts: bool = False) -> float:
        while times and now - (times[0][0] if counts else times[0]) > FPS_WINDOW_S:
            times.popleft()
        if not times:
            return 0.0
        total = sum(n for _, n in times) if counts else len(times)
        return total / FPS_WINDOW_S

    def health(self) -> dict:
        """Frames per second over the last window (all cameras), and counters since start."""
        with self._stats_lock:
            fps = self._rate(self._batches, time.monotonic(), counts=True)
            return {"fps": round(fps, 2), "frames": self.frames, "errors": self.errors, "detections": self.detections}

    def telemetry(self) -> dict:
        """The pipeline's part of a telemetry message: per-camera fps and drops, runtime latency, queue depths."""
        now = time.monotonic()
        cameras = []
        queues = {}
        with self._stats_lock:
            for camera, reader in self.readers.items():
                stats = reader.stats()
                fps = self._rate(self._camera_frames[camera], now)
                cameras.append(
                    fp.CameraTelemetry(camera=camera, fps=round(fps, 2), dropped_frames=stats["frames_dropped"])
                )
                queues[f"camera:{camera}"[:64]] = stats["queued"]
            queues["inference"] = self._in_batch
        queues["outbox"] = self.outbox.depth()
        runtimes = []
        active = self._active
        if active is not None:
            info = active.runtime.info()
            runtimes.append(
                fp.RuntimeTelemetry(
                    runtime=info["runtime"],
                    latency_p50_ms=info["latency_ms_p50"] or 0.0,
                    latency_p95_ms=info["latency_ms_p95"] or 0.0,
                )
            )
        return {"cameras": cameras, "runtimes": runtimes, "queues": queues}


def _plain(value):
    """A JSON scalar for an event attribute (numpy numbers become Python numbers; anything else its text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:128]
