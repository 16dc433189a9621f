"""Paths from the browser, resolved inside one folder: no absolute paths, no ``..``, no symlink out of it."""

from __future__ import annotations

import os
from pathlib import Path

from operators.errors import PipelineError
from pipeline.sources import VIDEO_EXTENSIONS, is_frame_folder

#: Sources listed at most, so a root over a huge tree still answers at once.
MAX_LISTED = 2000


class PathOutsideError(PipelineError):
    """A path the browser sent leaves the folder it must stay in."""


class NoSuchPathError(PipelineError):
    """A path the browser sent names nothing (of the kind asked for) in its folder."""


def resolve_inside(folder: Path, relative: str, must_exist: bool = True) -> Path:
    """``folder / relative`` with every symlink resolved, refused unless it stays inside ``folder``."""
    if "\0" in relative or Path(relative).is_absolute():
        raise PathOutsideError(relative, f"give a path relative to {folder}")
    base = folder.resolve()
    path = (base / relative).resolve()
    if path != base and not path.is_relative_to(base):
        raise PathOutsideError(relative, f"the path leaves {folder}")
    if must_exist and not path.exists():
        raise NoSuchPathError(relative, f"no such file or folder under {folder}")
    return path


def list_sources(root: Path) -> list[dict]:
    """Video files and frame folders under ``root`` (hidden entries and symlinks that leave it skipped), as paths
    relative to it, each with its folder, so the page can offer the whole folder as a job."""
    base = root.resolve()
    found = []
    for folder, subfolders, files in os.walk(base):
        here = Path(folder)
        if here != base and is_frame_folder(here):
            found.append(_listed(base, here, "frames"))
            subfolders.clear()
            continue
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and _stays_inside(base, here / d))
        for name in sorted(files):
            path = here / name
            if not name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS and _stays_inside(base, path):
                found.append(_listed(base, path, "video"))
        if len(found) >= MAX_LISTED:
            return found[:MAX_LISTED]
    return found


def is_source(path: Path) -> bool:
    """A video file or a frame folder, as ``run`` takes them."""
    return path.is_file() or is_frame_folder(path)


def _listed(base: Path, path: Path, kind: str) -> dict:
    relative = path.relative_to(base)
    return {"path": relative.as_posix(), "folder": relative.parent.as_posix(), "kind": kind}


def _stays_inside(base: Path, path: Path) -> bool:
    return path.resolve().is_relative_to(base)
