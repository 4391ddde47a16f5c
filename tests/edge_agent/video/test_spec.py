import pytest

from edge_agent.video.sources import FileSource, ImageFolderSource, StreamSource, SyntheticSource
from edge_agent.video.spec import SourceSpecError, open_source, parse_camera_source


def test_camera_sources_are_parsed_and_opened_by_kind(tmp_path):
    assert parse_camera_source("lot-a=synthetic:11:night") == ("lot-a", "synthetic:11:night")
    source = open_source("lot-a", "synthetic:11:night", size=(120, 160))
    assert isinstance(source, SyntheticSource)
    assert (source.seed, source.condition, source.camera, source.replay) == (11, "night", "lot-a", True)
    assert open_source("gate", "synthetic:3:gate:dusk", size=None).view == "gate"
    assert isinstance(open_source("c", f"file:{tmp_path}/a.mp4", size=None), FileSource)
    assert isinstance(open_source("c", f"folder:{tmp_path}", size=None), ImageFolderSource)
    assert isinstance(open_source("c", "rtsp://user:pw@10.0.0.5/stream", size=None), StreamSource)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("lot-a", "ID=SPEC"),
        ("=synthetic:1", "ID=SPEC"),
        ("lot-a=synthetic:x", "integer seed"),
        ("lot-a=synthetic:1:foggy", "unknown option 'foggy'"),
        ("lot-a=file:", "needs a path"),
        ("lot-a=webcam:0", "unknown source kind"),
    ],
)
def test_a_bad_camera_source_is_refused_with_the_reason(value, reason):
    with pytest.raises(SourceSpecError, match=reason):
        parse_camera_source(value)
