"""Video sources for the agent (synthetic scenes, files, image folders, live streams) and the threaded reader."""

from edge_agent.video.reader import CameraReader
from edge_agent.video.sources import (
    FileSource,
    Frame,
    ImageFolderSource,
    StreamSource,
    SyntheticSource,
    VideoSource,
    VideoSourceError,
    resize,
)

__all__ = [
    "CameraReader",
    "FileSource",
    "Frame",
    "ImageFolderSource",
    "StreamSource",
    "SyntheticSource",
    "VideoSource",
    "VideoSourceError",
    "resize",
]
