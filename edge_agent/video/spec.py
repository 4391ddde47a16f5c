"""Camera source specs for the command line: ``ID=SPEC``, one per camera.

synthetic:SEED[:CONDITION]     rendered smart-park scenes replaying one view (day, dusk, night, rain)
file:PATH                      a video file (mp4, avi, mkv…), looped
folder:PATH                    a folder of images in name order, looped
rtsp://… | http(s)://…         a live camera (reopened with back-off when it fails)
"""

from pathlib import Path

from edge_agent.video.sources import FileSource, ImageFolderSource, StreamSource, SyntheticSource, VideoSource

SPEC_HELP = (
    "a camera source ID=SPEC (repeatable), SPEC one of synthetic:SEED[:CONDITION][:VIEW], file:PATH, folder:PATH, "
    "rtsp://… or http(s)://…"
)
CONDITIONS = ("day", "dusk", "night", "rain")
VIEWS = ("gate", "lot")


class SourceSpecError(ValueError):
    pass


def parse_camera_source(value: str) -> tuple[str, str]:
    """Split ``ID=SPEC``; checks the spec's form so a typo fails at start-up, not in a camera thread."""
    camera_id, separator, spec = value.partition("=")
    if not separator or not camera_id or not spec:
        raise SourceSpecError(f"{value!r}: a camera source is ID=SPEC, e.g. gate=synthetic:7")
    open_source(camera_id, spec, size=None, check_only=True)
    return camera_id, spec


def open_source(
    camera_id: str, spec: str, *, size: tuple[int, int] | None, fps: float = 5.0, check_only: bool = False
) -> VideoSource | None:
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        seed_text, *options = rest.split(":")
        try:
            seed = int(seed_text)
        except ValueError:
            raise SourceSpecError(f"{spec!r}: synthetic:SEED needs an integer seed") from None
        condition = next((option for option in options if option in CONDITIONS), None)
        view = next((option for option in options if option in VIEWS), None)
        if unknown := [option for option in options if option not in CONDITIONS + VIEWS]:
            raise SourceSpecError(
                f"{spec!r}: unknown option {unknown[0]!r}; a condition ({', '.join(CONDITIONS)}) "
                f"or a view ({', '.join(VIEWS)})"
            )
        if check_only:
            return None
        return SyntheticSource(
            seed, fps=fps, replay=True, camera=camera_id, size=size, condition=condition, view=view, realtime=True
        )
    if kind in ("file", "folder"):
        if not rest:
            raise SourceSpecError(f"{spec!r}: {kind}:PATH needs a path")
        if check_only:
            return None
        if kind == "file":
            return FileSource(Path(rest), loop=True, realtime=True, size=size)
        return ImageFolderSource(Path(rest), fps=fps, loop=True, realtime=True, size=size)
    if kind in ("rtsp", "rtsps", "http", "https"):
        return None if check_only else StreamSource(spec, size=size)
    raise SourceSpecError(f"{spec!r}: unknown source kind {kind!r} (synthetic, file, folder, rtsp, http)")
