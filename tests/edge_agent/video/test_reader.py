import numpy as np
import pytest

from edge_agent.backoff import Backoff
from edge_agent.video import CameraReader, Frame, StreamSource, SyntheticSource, VideoSource, VideoSourceError
from tests.helpers import wait_until


def finite_source(frames: int = 20, realtime: bool = False) -> SyntheticSource:
    return SyntheticSource(5, fps=10, sequence_s=frames / 10, loop=False, realtime=realtime, size=(60, 80))


def wait_until_finished(reader: CameraReader, timeout: float = 20.0) -> None:
    reader._thread.join(timeout)
    assert not reader.running


def test_a_consumer_that_reads_too_late_gets_the_newest_frames_and_the_rest_are_counted_as_dropped():
    reader = CameraReader(finite_source(20), max_queue=2).start()
    wait_until_finished(reader)
    frames = list(reader)
    assert [frame.timestamp for frame in frames] == pytest.approx([1.8, 1.9])
    assert reader.stats() == {
        "frames_read": 20,
        "frames_dropped": 18,
        "frames_delivered": 2,
        "queued": 0,
        "running": False,
        "error": None,
    }


def test_a_slow_consumer_loses_frames_but_every_frame_is_accounted_for():
    delivered = []
    with CameraReader(finite_source(20), max_queue=1) as reader:
        while (frame := reader.read(timeout=10)) is not None:
            delivered.append(frame.timestamp)
            # a consumer slower than the camera: before taking the next frame, the camera has made two more
            read = reader.stats()["frames_read"]
            wait_until(lambda read=read: reader.stats()["frames_read"] >= min(read + 2, 20) or not reader.running, 10)
        stats = reader.stats()
    assert stats["frames_read"] == 20
    assert stats["frames_dropped"] > 0
    assert stats["frames_delivered"] == len(delivered) == 20 - stats["frames_dropped"]
    assert delivered == sorted(delivered) and delivered[-1] == pytest.approx(1.9)


def test_a_fast_consumer_loses_nothing():
    with CameraReader(finite_source(10, realtime=True), max_queue=2) as reader:
        frames = list(reader)
    assert len(frames) == 10 and reader.stats()["frames_dropped"] == 0
    reference = list(finite_source(10).frames())
    for got, expected in zip(frames, reference, strict=True):
        np.testing.assert_array_equal(got.image, expected.image)


class OneFrameThenSilence(VideoSource):
    """A camera that delivers one frame and then nothing until it is closed (a stalled stream)."""

    def frames(self):
        yield Frame(0.0, np.zeros((60, 80, 3), np.uint8))
        self._closed.wait()


def test_read_times_out_and_stop_ends_an_endless_source_promptly():
    reader = CameraReader(OneFrameThenSilence(), max_queue=2).start()
    assert reader.read(timeout=5) is not None
    assert reader.read(timeout=0.1) is None  # nothing more is coming: the timeout returns None
    reader.stop()
    assert not reader.running


def test_a_source_error_reaches_the_consumer_and_telemetry_with_the_reconnect_count():
    source = StreamSource("http://127.0.0.1:9/camera.mjpg", backoff=Backoff(0.01, 0.02), max_attempts=4)
    with CameraReader(source) as reader:
        with pytest.raises(VideoSourceError, match="after 4 attempts"):
            reader.read(timeout=20)
        stats = reader.stats()
    assert stats["reconnects"] == 3 and stats["frames_read"] == 0
    assert "could not open the stream after 4 attempts" in stats["error"]


def test_a_reader_starts_once_and_needs_a_queue():
    reader = CameraReader(finite_source(2)).start()
    with pytest.raises(RuntimeError, match="already started"):
        reader.start()
    reader.stop()
    with pytest.raises(ValueError, match="max_queue must be >= 1"):
        CameraReader(finite_source(2), max_queue=0)
