"""Video sources: find local video files and live feeds and decode them with exact timestamps and clear errors.

The package's parts, each with one job:

* :mod:`~pipeline.sources.discovery`: files, folders and globs -> video files and frame folders
  (:func:`expand_sources`);
* :mod:`~pipeline.sources.probe`: one open, probe and error mapping shared by every backend;
* :mod:`~pipeline.sources.matroska`: the Matroska damage check (damage FFmpeg would only log);
* :mod:`~pipeline.sources.files`: the file readers, PyAV (default) and decord (:func:`open_video`);
* :mod:`~pipeline.sources.frame_folders`: a folder of JPEG/PNG frames read as one video;
* :mod:`~pipeline.sources.arrays`: frames a program holds (numpy arrays) read as one video;
* :mod:`~pipeline.sources.live`: live feeds with timeouts and reconnects (:class:`LiveReader`).

Frame indices are 0-based in presentation order; ``pts`` are seconds from the container's timestamps
(relative to the stream's start time, as decord reports them), never ``index / fps``.

FFmpeg's log stays off in this process: PyAV's log callback takes the GIL from decoder threads and
can deadlock them (PyAV issue #751), so do not enable ``av.logging`` where videos are decoded. Error
paths that need FFmpeg's words (an open failure's cause, an unknown codec's FOURCC) ask a
subprocess; damage FFmpeg would only log (Matroska skipping a damaged cluster) is found by walking
the Matroska elements instead. ``PyAVReader`` also takes any FFmpeg URL and demuxer ``options``; the
local-file checks live in :func:`open_video`.
"""

from pipeline.sources.arrays import ARRAY_SOURCE, ArrayReader
from pipeline.sources.discovery import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    expand_sources,
    frame_files,
    is_frame_folder,
    source_bytes,
)
from pipeline.sources.files import DECORD_REOPENS, Backend, DecordReader, PyAVReader, open_video
from pipeline.sources.frame_folders import DEFAULT_FOLDER_FPS, FrameFolderReader
from pipeline.sources.frames import DecodedFrame, VideoInfo, VideoReader
from pipeline.sources.live import (
    LIVE_SCHEMES, LiveFrame, LiveReader, ReconnectPolicy, SourceEvent, is_live_source, live_options,
)

__all__ = [
    "ARRAY_SOURCE",
    "ArrayReader",
    "DECORD_REOPENS",
    "DEFAULT_FOLDER_FPS",
    "IMAGE_EXTENSIONS",
    "LIVE_SCHEMES",
    "VIDEO_EXTENSIONS",
    "Backend",
    "DecodedFrame",
    "DecordReader",
    "FrameFolderReader",
    "LiveFrame",
    "LiveReader",
    "PyAVReader",
    "ReconnectPolicy",
    "SourceEvent",
    "VideoInfo",
    "VideoReader",
    "expand_sources",
    "frame_files",
    "is_frame_folder",
    "source_bytes",
    "is_live_source",
    "live_options",
    "open_video",
]
