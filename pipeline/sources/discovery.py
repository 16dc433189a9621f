"""Finding sources: files, folders and globs turned into an ordered list of videos.

A video is a video file or a frame folder: a folder holding JPEG or PNG images and no video file (DAVIS's
``JPEGImages/480p/<sequence>/``). Any other folder is an archive: the video files and frame folders in it
(with ``recursive``, at any depth). So a folder of frame folders is an archive of frame-folder videos, and
video files and frame folders mix in one job.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Sequence

from operators.errors import VideoOpenError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _natural_key(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _visible_files(folder: Path, extensions: Sequence[str]) -> list[Path]:
    """Files of ``folder`` with one of ``extensions`` (any case), hidden ones skipped. ``scandir`` knows each
    entry's type from the listing, so a folder of thousands of frames costs no stat per frame."""
    try:
        with os.scandir(folder) as entries:
            return [Path(e.path) for e in entries
                    if os.path.splitext(e.name)[1].lower() in extensions and not e.name.startswith(".") and e.is_file()]
    except OSError:
        return []


def frame_files(folder: Path) -> list[Path]:
    """A frame folder's JPEG and PNG files (hidden ones skipped), in natural order of their names
    (``frame2.png`` before ``frame10.png``)."""
    return sorted(_visible_files(folder, IMAGE_EXTENSIONS), key=_natural_key)


def is_frame_folder(path: Path) -> bool:
    """A folder holding JPEG or PNG images and no video file: one video, its frames the images."""
    return path.is_dir() and bool(_visible_files(path, IMAGE_EXTENSIONS)) and not _visible_files(path, VIDEO_EXTENSIONS)


def source_bytes(path: Path) -> int:
    """The bytes a video holds: a file's size, a frame folder's frames' together; 0 where it cannot be read."""
    try:
        return sum(f.stat().st_size for f in frame_files(path)) if path.is_dir() else path.stat().st_size
    except OSError:
        return 0


def expand_sources(specs: Sequence[str], recursive: bool = False) -> list[Path]:
    """Turn files, directories and globs into a de-duplicated, ordered list of video files and frame folders.

    Directory and glob matches are filtered by :data:`VIDEO_EXTENSIONS` (case-insensitive, hidden
    files skipped) or are frame folders (:func:`is_frame_folder`); a file named explicitly is kept whatever
    its extension, the decoder decides.
    A spec that yields nothing raises :class:`VideoOpenError` so a typo never silently empties a batch.
    """
    found: dict[Path, Path] = {}
    for spec in specs:
        for path in _expand_spec(spec, recursive):
            found.setdefault(path.resolve(), path)
    return list(found.values())


def _expand_spec(spec: str, recursive: bool) -> list[Path]:
    path = Path(spec)
    if path.is_file():
        return [path]
    if is_frame_folder(path):
        return [path]
    if path.is_dir():
        pattern = os.path.join(glob.escape(spec), "**", "*") if recursive else os.path.join(glob.escape(spec), "*")
        videos = _video_files(pattern, recursive)
        if not videos:
            kinds = ", ".join(extension[1:] for extension in VIDEO_EXTENSIONS)
            images = ", ".join(extension[1:] for extension in IMAGE_EXTENSIONS)
            raise VideoOpenError(spec, f"no video files ({kinds}) or frame folders (folders of {images} images) "
                                       "in directory")
        return videos
    if glob.has_magic(spec):
        videos = _video_files(spec, recursive)
        if not videos:
            raise VideoOpenError(spec, "glob matched no video files or frame folders")
        return videos
    raise VideoOpenError(spec, "no such file")


def _video_files(pattern: str, recursive: bool) -> list[Path]:
    """Video files and frame folders matching ``pattern``."""
    matches = (Path(match) for match in glob.glob(pattern, recursive=recursive))
    return sorted(m for m in matches if (m.suffix.lower() in VIDEO_EXTENSIONS and m.is_file()) or is_frame_folder(m))
