"""One JSON object per frame in ``<out_dir>/<stream_id>/frames.jsonl``: the pipeline's primary output."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import BinaryIO

from operators.records import FrameRecord
from operators.output_files import open_output, output_errors, prepare_out_dir, stream_dir
from operators.sinks.base import StreamInfo


class JsonlSink:
    """Appends ``record.to_json()``, one line per frame, flushed after every line.

    Flushing per line hands each frame to the OS as soon as it is written, so a
    killed job leaves a file of complete frames (at worst one torn last line,
    which a resume drops).

    Resume: ``open(stream, start_frame=k)`` keeps the existing lines with
    ``frame_index < k`` (stopping at the first line that is later, torn or
    unreadable), truncates the rest and appends from there. ``start_frame=0``
    starts a fresh file.
    """

    needs_image = False

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = prepare_out_dir(out_dir)
        self.path: Path | None = None
        self._file: BinaryIO | None = None
        self._kept = 0
        self._written = 0

    def open(self, stream: StreamInfo, start_frame: int = 0) -> None:
        self.path = stream_dir(self.out_dir, stream.stream_id) / "frames.jsonl"
        self._file = open_output(self.path, "a+b")
        with output_errors(self.path):
            self._kept = _truncate_to_frames_before(self._file, start_frame)
        self._written = 0

    def write(self, record: FrameRecord) -> None:
        line = record.to_json().encode() + b"\n"
        with output_errors(self.path):
            self._file.write(line)
            self._file.flush()
        self._written += 1

    def close(self) -> dict:
        with output_errors(self.path):
            self._file.close()
        return {"sink": "jsonl", "path": str(self.path), "frames": self._kept + self._written,
                "frames_kept": self._kept}


def _truncate_to_frames_before(file: BinaryIO, start_frame: int) -> int:
    """Cut ``file`` after its leading run of complete lines with ``frame_index < start_frame``; return their count."""
    file.seek(0)
    kept, end = 0, 0
    for line in file:
        if not line.endswith(b"\n") or _frame_index(line) >= start_frame:
            break
        kept, end = kept + 1, end + len(line)
    file.truncate(end)
    return kept


def _frame_index(line: bytes) -> float:
    """The line's ``frame_index``, or infinity when the line is not a frame record (so a resume stops there)."""
    try:
        return int(json.loads(line)["frame_index"])
    except (ValueError, KeyError, TypeError):
        return math.inf
