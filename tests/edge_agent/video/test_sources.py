import functools
import http.server
import itertools
import threading

import cv2
import numpy as np
import pytest

from edge_agent.backoff import Backoff
from edge_agent.video import FileSource, ImageFolderSource, StreamSource, SyntheticSource, VideoSourceError

COLOURS_RGB = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40)]


def take(source, count: int) -> list:
    frames = list(itertools.islice(source.frames(), count))
    source.close()
    return frames


def write_mp4(path, frame_count: int = 12, size=(64, 80), fps: float = 10.0):
    """A real mp4 (MPEG-4 part 2) whose frames are solid colours cycling through COLOURS_RGB."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    assert writer.isOpened()
    for index in range(frame_count):
        rgb = np.full((*size, 3), COLOURS_RGB[index % len(COLOURS_RGB)], np.uint8)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_synthetic_frames_are_deterministic_and_timestamped_in_scene_time():
    first = take(SyntheticSource(2, fps=10, sequence_s=1, loop=False, realtime=False), 100)
    second = take(SyntheticSource(2, fps=10, sequence_s=1, loop=False, realtime=False), 100)
    assert len(first) == 10
    assert [frame.timestamp for frame in first] == pytest.approx([i / 10 for i in range(10)])
    for a, b in zip(first, second, strict=True):
        assert a.image.shape == (240, 320, 3) and a.image.dtype == np.uint8
        np.testing.assert_array_equal(a.image, b.image)
    other_seed = take(SyntheticSource(3, fps=10, sequence_s=1, loop=False, realtime=False), 1)
    assert not np.array_equal(other_seed[0].image, first[0].image)


def test_a_looping_synthetic_source_continues_with_the_next_sequence_and_its_clock():
    frames = take(SyntheticSource(2, fps=10, sequence_s=0.5, realtime=False), 8)
    assert [frame.timestamp for frame in frames] == pytest.approx([i / 10 for i in range(8)])
    next_sequence = take(SyntheticSource(3, fps=10, sequence_s=0.5, loop=False, realtime=False), 1)
    np.testing.assert_array_equal(frames[5].image, next_sequence[0].image)


def test_a_replaying_synthetic_source_keeps_its_view_and_zones():
    source = SyntheticSource(2, fps=10, sequence_s=0.5, realtime=False, replay=True, camera="lot-a")
    frames = take(source, 8)
    assert [frame.timestamp for frame in frames] == pytest.approx([i / 10 for i in range(8)])
    np.testing.assert_array_equal(frames[5].image, frames[0].image)
    config = source.scene_config()
    assert config.camera == "lot-a" and config.zones
    assert SyntheticSource(2, fps=10, sequence_s=0.5, camera="lot-a").scene_config() == config


def test_synthetic_frames_are_resized_to_the_model_input():
    (frame,) = take(SyntheticSource(2, fps=5, realtime=False, size=(120, 160)), 1)
    assert frame.image.shape == (120, 160, 3) and frame.image.dtype == np.uint8


class _RecordingEvent:
    """A stand-in for the source's `closed` event that records how long the pacer asks to wait."""

    def __init__(self, clock):
        self.clock = clock
        self.waits = []

    def wait(self, timeout):
        self.waits.append(timeout)
        self.clock.now += timeout  # the wait lasts as long as asked: the clock moves on
        return False


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_realtime_source_is_paced_at_its_fps():
    from edge_agent.video.sources import _Pacer

    clock = _Clock()
    closed = _RecordingEvent(clock)
    pacer = _Pacer(20, True, closed, clock=clock)
    for frame in range(4):
        if frame == 2:
            clock.now += 0.02  # rendering frame 2 took 20 ms: the pacer waits that much less for it
        pacer.wait()
    # frame n is due at n / fps after the start: 0, 50, 100 and 150 ms
    assert closed.waits == pytest.approx([0.0, 0.05, 0.03, 0.05])
    free_running = _Pacer(20, False, closed, clock=clock)
    free_running.wait()
    assert len(closed.waits) == 4  # not realtime: never waits


def test_an_mp4_written_with_opencv_reads_back_as_rgb_frames(tmp_path):
    path = write_mp4(tmp_path / "clip.mp4")
    frames = list(FileSource(path).frames())
    assert len(frames) == 12
    assert [frame.timestamp for frame in frames] == pytest.approx([i / 10 for i in range(12)])
    for index, frame in enumerate(frames):
        assert frame.image.shape == (64, 80, 3)
        # mp4v is lossy; a solid colour comes back within a few levels, and in RGB order
        mean = frame.image.reshape(-1, 3).mean(axis=0)
        np.testing.assert_allclose(mean, COLOURS_RGB[index % len(COLOURS_RGB)], atol=8)


def test_a_video_file_loops_and_resizes_on_request(tmp_path):
    path = write_mp4(tmp_path / "clip.mp4")
    frames = take(FileSource(path, loop=True, size=(32, 48)), 30)
    assert len(frames) == 30
    assert frames[-1].timestamp == pytest.approx(2.9)
    assert {frame.image.shape for frame in frames} == {(32, 48, 3)}


def test_a_missing_or_undecodable_video_file_is_a_clear_error(tmp_path):
    with pytest.raises(VideoSourceError, match="no such file"):
        list(FileSource(tmp_path / "missing.mp4").frames())
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoSourceError, match=r"notes\.mp4: (OpenCV cannot open it|no frame could be decoded)"):
        list(FileSource(tmp_path / "notes.mp4").frames())


def test_an_image_folder_gives_its_images_in_name_order(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8) for _ in range(3)]
    for index, rgb in zip((2, 0, 1), images, strict=True):
        cv2.imwrite(str(tmp_path / f"frame-{index:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (tmp_path / "readme.txt").write_text("ignored")
    frames = list(ImageFolderSource(tmp_path, fps=4).frames())
    assert [frame.timestamp for frame in frames] == [0.0, 0.25, 0.5]
    for frame, expected in zip(frames, (images[1], images[2], images[0]), strict=True):
        np.testing.assert_array_equal(frame.image, expected)  # png is lossless
    resized = take(ImageFolderSource(tmp_path, loop=True, size=(15, 20)), 7)
    assert len(resized) == 7 and resized[6].image.shape == (15, 20, 3)


def test_an_empty_or_broken_image_folder_is_a_clear_error(tmp_path):
    with pytest.raises(VideoSourceError, match="no such folder"):
        list(ImageFolderSource(tmp_path / "missing").frames())
    with pytest.raises(VideoSourceError, match=r"no \.png, \.jpg, \.jpeg, \.bmp files"):
        list(ImageFolderSource(tmp_path).frames())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(VideoSourceError, match=r"broken\.png is not an image OpenCV can read"):
        list(ImageFolderSource(tmp_path).frames())


def test_an_unreachable_stream_is_retried_with_backoff_then_refused_without_its_password():
    source = StreamSource("rtsp://viewer:secret@127.0.0.1:9/park", backoff=Backoff(0.01, 0.02), max_attempts=3)
    with pytest.raises(VideoSourceError) as raised:
        list(source.frames())
    message = str(raised.value)
    assert "rtsp://***@127.0.0.1:9/park" in message and "secret" not in message
    assert "could not open the stream after 3 attempts" in message
    assert source.failed_opens == 3 and source.reconnects == 2


def test_a_stream_url_must_be_rtsp_or_http():
    with pytest.raises(ValueError, match="must start with rtsp://"):
        StreamSource("/dev/video0")


@pytest.fixture
def http_server(tmp_path):
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_stream_that_ends_is_reopened_and_frames_keep_coming(http_server):
    base_url, folder = http_server
    write_mp4(folder / "camera.mp4")
    source = StreamSource(f"{base_url}/camera.mp4", backoff=Backoff(0.01, 0.02), max_attempts=2, size=(32, 40))
    frames = take(source, 30)
    # the 12-frame clip ended twice, and each time the source reconnected
    assert len(frames) == 30 and source.reconnects == 2 and source.failed_opens == 0
    assert {frame.image.shape for frame in frames} == {(32, 40, 3)}
    assert all(b.timestamp >= a.timestamp for a, b in itertools.pairwise(frames))
