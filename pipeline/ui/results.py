"""A finished video's results as the page shows them: any frame's record from ``frames.jsonl``, and figures
per track. The file is read back from a folder others may write to, so each line is checked as it is used."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from operators.errors import PipelineError
from operators.records import FrameRecord

#: What the jsonl and mp4 sinks write in each video's folder (operators/sinks/jsonl.py, video.py).
FRAMES_FILE = "frames.jsonl"
ANNOTATED_FILE = "annotated.mp4"


class ResultError(PipelineError):
    """A result file is missing or holds something other than the pipeline's frame records."""


class FrameLog:
    """Random access to the lines of one ``frames.jsonl``: the byte offset of every line, found once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._offsets: list[int] = []
        self._end = 0  # the byte after the last line indexed

    def __len__(self) -> int:
        with self._lock:
            self._index()
            return len(self._offsets)

    def record(self, index: int) -> FrameRecord:
        with self._lock:
            self._index()
            if not 0 <= index < len(self._offsets):
                raise ResultError(str(self.path), f"no record for frame {index} ({len(self._offsets)} frames)", index)
            with self.path.open("rb") as file:
                file.seek(self._offsets[index])
                line = file.readline()
        try:
            record = FrameRecord.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise ResultError(str(self.path), f"line {index + 1} is not a frame record ({exc})", index) from None
        if record.frame_index != index:
            raise ResultError(str(self.path), f"line {index + 1} holds frame {record.frame_index}", index)
        return record

    def track_figures(self) -> list[dict]:
        """Per track: frames present, first and last frame, mean area (pixels) and mean score."""
        tracks: dict[int, dict] = {}
        for number, data in enumerate(self._lines(), 1):
            try:
                for entry in data["objects"]:
                    track = tracks.setdefault(int(entry["track_id"]), {
                        "track_id": int(entry["track_id"]), "prompt_id": int(entry["prompt_id"]), "frames": 0,
                        "first_frame": int(data["frame_index"]), "area": 0.0, "score": 0.0})
                    track["frames"] += 1
                    track["last_frame"] = int(data["frame_index"])
                    track["area"] += float(entry["area"])
                    track["score"] += float(entry["score"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ResultError(str(self.path), f"line {number} is not a frame record ({exc})") from None
        figures = []
        for track in sorted(tracks.values(), key=lambda t: t["track_id"]):
            area, score = track.pop("area"), track.pop("score")
            figures.append({**track, "mean_area": round(area / track["frames"], 1),
                            "mean_score": round(score / track["frames"], 4)})
        return figures

    def _lines(self):
        with self.path.open("rb") as file:
            for number, line in enumerate(file, 1):
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ResultError(str(self.path), f"line {number} is not JSON ({exc})") from None

    def _index(self) -> None:
        """Offsets of the complete lines, extended as the file grows (a running video appends to it)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            raise ResultError(str(self.path), "no results yet (the video has not started)") from None
        if size < self._end:  # rewritten (a resumed run truncates to its checkpoint): start over
            self._offsets, self._end = [], 0
        if size == self._end:
            return
        with self.path.open("rb") as file:
            file.seek(self._end)
            for line in file:
                if not line.endswith(b"\n"):
                    break  # still being written
                self._offsets.append(self._end)
                self._end += len(line)
