"""The camera pipeline on synthetic cameras with the shipped detector, lowered to int8 and packaged for a device."""

import time
from collections.abc import Iterator

import numpy as np
import pytest

from edge_agent.outbox import EventOutbox
from edge_agent.pipeline import Pipeline
from edge_agent.video import Frame, SyntheticSource, VideoSource
from smartpark.scenes.sequences import generate_sequence
from tests.helpers import wait_until

FPS = 5.0
SEQUENCE_S = 12.0
# Daytime lot views with cars parked from the first frame (seeds checked against their ground-truth logs).
SEEDS = {"lot-a": 1, "lot-b": 4}


@pytest.fixture(scope="module")
def package():
    """The shipped checkpoint, calibrated, lowered to int8 codes and packaged as benchmarks.runtimes does (~2 s)."""
    from benchmarks.runtimes import CALIBRATION_SEED, FRAME_SEED, _integer_package, _rendered
    from smartpark.detector import load_detector

    return _integer_package(load_detector(), _rendered(CALIBRATION_SEED, 8), _rendered(FRAME_SEED, 2))


def camera(seed: int) -> SyntheticSource:
    return SyntheticSource(seed, fps=FPS, sequence_s=SEQUENCE_S, loop=False, realtime=False, condition="day")


def scene(seed: int):
    return generate_sequence(seed, duration_s=SEQUENCE_S, fps=FPS, condition="day").config


def finished(pipeline: Pipeline, frames: int) -> bool:
    return pipeline.health()["frames"] >= frames and not any(r.running for r in pipeline.readers.values())


def test_parked_cars_become_occupancy_events_with_wall_clock_times(tmp_path, package):
    # given two synthetic lot cameras; queues large enough that no frame is dropped, so the run is deterministic
    outbox = EventOutbox(tmp_path / "outbox.db")
    pipeline = Pipeline({name: camera(seed) for name, seed in SEEDS.items()}, outbox, batch_size=4, queue_frames=1000,
                        runtime_options={"cpu-int8": {"threads": 2}})  # fmt: skip
    pipeline.activate(package, "cpu-int8", {name: scene(seed) for name, seed in SEEDS.items()},
                      model="smartpark-detector", model_version=7, scene_version=3)  # fmt: skip
    started = time.time()
    # when every frame has been through
    pipeline.start()
    try:
        total = len(SEEDS) * int(SEQUENCE_S * FPS)
        wait_until(lambda: finished(pipeline, total), timeout=60, message="both cameras processed")
        health = pipeline.health()
        telemetry = pipeline.telemetry()
    finally:
        pipeline.stop()
    # then
    assert health["frames"] == total and health["errors"] == 0 and health["detections"] > 0 and health["fps"] > 0
    events = outbox.pending(10_000)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    occupied = [e for e in events if e.rule == "occupancy" and e.attributes["state"] == "occupied"]
    for name in SEEDS:
        spaces = {e.zone for e in occupied if e.camera == name}
        assert len(spaces) >= 2, f"{name}: occupied spaces {spaces}"
    for e in events:
        # frame-timestamp based: the first frame is "now", scene time runs on from there (faster than real time here)
        assert started - 1 <= e.start <= (e.end or e.start) <= started + SEQUENCE_S + 1
        assert (e.model, e.model_version, e.scene_version) == ("smartpark-detector", 7, 3)
        assert e.camera in SEEDS
    assert {c.camera for c in telemetry["cameras"]} == set(SEEDS)
    assert all(c.dropped_frames == 0 for c in telemetry["cameras"])
    (runtime,) = telemetry["runtimes"]
    assert runtime.runtime == "cpu-int8" and 0 < runtime.latency_p50_ms <= runtime.latency_p95_ms
    # The outbox gauge after stop: the rules may still have been writing the last frames' events at the snapshot.
    assert pipeline.telemetry()["queues"]["outbox"] == len(events)
    assert {"camera:lot-a", "camera:lot-b", "inference"} <= set(telemetry["queues"])
    outbox.close()


class GlitchySource(VideoSource):
    """Good frames with a broken one (a single channel) every third frame."""

    def __init__(self, count: int):
        super().__init__()
        self.count = count

    def frames(self) -> Iterator[Frame]:
        for i in range(self.count):
            shape = (240, 320) if i % 3 == 2 else (240, 320, 3)
            yield Frame(i / FPS, np.full(shape, 90, np.uint8))


def test_bad_frames_are_counted_and_activate_none_stops_detecting(tmp_path, package):
    # given a camera that delivers a bad frame now and then
    outbox = EventOutbox(tmp_path / "outbox.db")
    pipeline = Pipeline({"gate": GlitchySource(30)}, outbox, queue_frames=100)
    pipeline.activate(package, "cpu-int8", {})
    # when it runs
    pipeline.start()
    try:
        wait_until(lambda: finished(pipeline, 30), timeout=30, message="30 frames")
        # then the bad frames are errors and the pipeline goes on
        assert pipeline.health()["errors"] == 10
        assert pipeline.telemetry()["runtimes"][0].runtime == "cpu-int8"
        # when detection is switched off
        pipeline.activate(None, "cpu-int8", {})
        # then the runtime is gone from telemetry
        assert pipeline.telemetry()["runtimes"] == []
    finally:
        pipeline.stop()
    assert outbox.depth() == 0
    outbox.close()


def test_activate_refuses_scene_configs_for_unknown_cameras(tmp_path, package):
    pipeline = Pipeline({"lot-a": camera(1)}, EventOutbox(tmp_path / "outbox.db"))
    with pytest.raises(ValueError, match="unknown cameras"):
        pipeline.activate(package, "cpu-int8", {"lot-z": scene(1)})
