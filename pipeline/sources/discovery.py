"""Finding sources: files, folders and globs turned into an ordered list of video files."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

from operators.errors import VideoOpenError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def expand_sources(specs: Sequence[str], recursive: bool = False) -> list[Path]:
    """Turn files, directories and globs into a de-duplicated, ordered list of video files.

    Directory and glob matches are filtered by :data:`VIDEO_EXTENSIONS` (case-insensitive, hidden
    files skipped); a file named explicitly is kept whatever its extension, the decoder decides.
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
    if path.is_dir():
        pattern = os.path.join(glob.escape(spec), "**", "*") if recursive else os.path.join(glob.escape(spec), "*")
        videos = _video_files(pattern, recursive)
        if not videos:
            kinds = ", ".join(extension[1:] for extension in VIDEO_EXTENSIONS)
            raise VideoOpenError(spec, f"no video files ({kinds}) in directory")
        return videos
    if glob.has_magic(spec):
        videos = _video_files(spec, recursive)
        if not videos:
            raise VideoOpenError(spec, "glob matched no video files")
        return videos
    raise VideoOpenError(spec, "no such file")


def _video_files(pattern: str, recursive: bool) -> list[Path]:
    matches = (Path(match) for match in glob.glob(pattern, recursive=recursive))
    return sorted(match for match in matches if match.suffix.lower() in VIDEO_EXTENSIONS and match.is_file())
