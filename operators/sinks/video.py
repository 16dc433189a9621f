"""Annotated H.264 preview, ``<out_dir>/<stream_id>/annotated.mp4``, for people to watch the result."""

from __future__ import annotations

import shutil
from pathlib import Path

from operators.annotate import Annotator, default_annotator
from operators.records import FrameRecord
from operators.output_files import output_errors, prepare_out_dir, stream_dir
from operators.sinks.base import StreamInfo
from operators.video_writer import H264Writer, join_mp4


class VideoSink:
    """Draws each record's instances on its image and encodes the frames at the stream's fps.

    An MP4 cannot be appended to, and an interrupted one has no index. So the video is written in parts,
    ``annotated.parts/from_<first frame>.mp4``, a new one at each stream checkpoint (:meth:`checkpoint`),
    and the parts are joined into ``annotated.mp4`` (packets copied, not re-encoded) when the stream ends.
    A stream resumed at frame ``k`` keeps the parts before ``k`` and writes on from there: its
    ``annotated.mp4`` holds every frame, as an uninterrupted run's does.
    """

    needs_image = True

    def __init__(self, out_dir: str | Path, annotator: Annotator | None = None, crf: int = 23) -> None:
        self.out_dir = prepare_out_dir(out_dir)
        self.annotator = annotator or default_annotator()
        self.crf = crf
        self.path: Path | None = None  # the joined video, once the stream ends
        self._parts: Path | None = None
        self._stream: StreamInfo | None = None
        self._writer: H264Writer | None = None
        self._next_frame = 0

    def open(self, stream: StreamInfo, start_frame: int = 0) -> None:
        self._stream = stream
        self.path = stream_dir(self.out_dir, stream.stream_id) / "annotated.mp4"
        self._parts = stream_dir(self.out_dir, stream.stream_id, "annotated.parts")
        for part in self._parts.glob("from_*.mp4"):  # what a resumed run rewrites, or all on a fresh start
            if _first_frame(part) >= start_frame:
                part.unlink()
        self._start_part(start_frame)

    def _start_part(self, first_frame: int) -> None:
        path = self._parts / f"from_{first_frame:06d}.mp4"
        with output_errors(path):
            self._writer = H264Writer(path, self._stream.fps, self._stream.width, self._stream.height, crf=self.crf,
                                      first_frame=first_frame, joinable=True)
        self._next_frame = first_frame

    def write(self, record: FrameRecord) -> None:
        image = record.image
        expected = (self._stream.height, self._stream.width, 3)
        if image is None or image.shape != expected:
            got = "no image" if image is None else f"an image of shape {image.shape}"
            raise ValueError(
                f"stream {record.stream_id!r} frame {record.frame_index}: the video sink needs an RGB image "
                f"of shape {expected}, got {got}"
            )
        annotated = self.annotator.annotate(image, record.instances)
        with output_errors(self._writer.path):
            self._writer.write(annotated)
        self._next_frame = record.frame_index + 1

    def checkpoint(self) -> bool:
        """Every record so far is written: finish this part, so an interrupted run keeps it whole."""
        if self._writer.frames_written:
            with output_errors(self._writer.path):
                self._writer.close()
            self._start_part(self._next_frame)
        return True

    def close(self) -> dict:
        with output_errors(self._writer.path):
            self._writer.close()
        parts = sorted(self._parts.glob("from_*.mp4"), key=_first_frame)
        with output_errors(self.path):
            frames = join_mp4(parts, self.path)
            shutil.rmtree(self._parts)
        return {"sink": "mp4", "path": str(self.path), "frames": frames}


def _first_frame(part: Path) -> int:
    return int(part.stem.removeprefix("from_"))
