"""A results folder read back for export: which videos it holds and each one's checked frame records."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from operators.errors import PipelineError
from operators.output_files import atomic_output, output_errors
from operators.records import FrameRecord

#: What the jsonl sink writes in each video's folder (operators/sinks/jsonl.py).
FRAMES_FILE = "frames.jsonl"


class ExportError(PipelineError):
    """A results folder without frame records, or a ``frames.jsonl`` line that is not one."""


@dataclass(frozen=True)
class VideoResults:
    """One video's ``frames.jsonl``; ``video_id`` is its 1-based place among the export's videos (name order)."""

    video_id: int
    name: str
    path: Path

    def records(self) -> Iterator[FrameRecord]:
        """The records in order, each checked: valid JSON, a frame record, frame indices 0, 1, 2, ..."""
        try:
            file = self.path.open("rb")
        except OSError as exc:
            raise ExportError(str(self.path), f"cannot read: {exc.strerror or exc}") from None
        with file:
            for number, line in enumerate(file, 1):
                try:
                    record = FrameRecord.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise ExportError(str(self.path), f"line {number} is not a frame record ({exc!s:.200})") from None
                if record.frame_index != number - 1:
                    raise ExportError(str(self.path), f"line {number} holds frame {record.frame_index}, expected "
                                                      f"{number - 1} (one record per frame, in order)")
                yield record


def find_videos(results_dir: Path) -> list[VideoResults]:
    """``results_dir`` itself when it holds a ``frames.jsonl`` (one video's folder), else its subfolders that do
    (a job's ``--out``), in name order."""
    if not results_dir.is_dir():
        raise ExportError(str(results_dir), "no such results folder")
    if (results_dir / FRAMES_FILE).is_file():
        folders = [results_dir]
    else:
        folders = sorted(p for p in results_dir.iterdir() if (p / FRAMES_FILE).is_file())
    if not folders:
        raise ExportError(str(results_dir), f"no {FRAMES_FILE} in this folder or its subfolders")
    return [VideoResults(i, folder.name, folder / FRAMES_FILE) for i, folder in enumerate(folders, 1)]


@contextmanager
def output_file(path: Path) -> Iterator[IO[str]]:
    """A text file written whole or not at all, in a folder made for it if need be (:func:`atomic_output`)."""
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path, "w") as file:
        yield file
