"""Annotated H.264 preview, ``<out_dir>/<stream_id>/annotated.mp4``, for people to watch the result."""

from __future__ import annotations

from pathlib import Path

from operators.annotate import Annotator, ContourAnnotator, LabelAnnotator, MaskAnnotator, compose
from operators.records import FrameRecord
from operators.sinks.base import StreamInfo, output_errors, prepare_out_dir, stream_dir
from operators.video_writer import H264Writer


def default_annotator() -> Annotator:
    """Translucent masks, then outlines, then labels on top."""
    return compose(MaskAnnotator(opacity=0.5), ContourAnnotator(), LabelAnnotator())


class VideoSink:
    """Draws each record's instances on its image and encodes the frames at the stream's fps.

    An MP4 cannot be appended to (and an interrupted one has no index), so a
    resumed stream (``start_frame=k > 0``) writes frames ``k..`` to
    ``annotated_from_<k:06d>.mp4`` and leaves any earlier file alone.
    """

    needs_image = True

    def __init__(self, out_dir: str | Path, annotator: Annotator | None = None, crf: int = 23) -> None:
        self.out_dir = prepare_out_dir(out_dir)
        self.annotator = annotator or default_annotator()
        self.crf = crf
        self.path: Path | None = None
        self._stream: StreamInfo | None = None
        self._writer: H264Writer | None = None

    def open(self, stream: StreamInfo, start_frame: int = 0) -> None:
        name = "annotated.mp4" if start_frame == 0 else f"annotated_from_{start_frame:06d}.mp4"
        self.path = stream_dir(self.out_dir, stream.stream_id) / name
        self._stream = stream
        with output_errors(self.path):
            self._writer = H264Writer(self.path, stream.fps, stream.width, stream.height, crf=self.crf)

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
        with output_errors(self.path):
            self._writer.write(annotated)

    def close(self) -> dict:
        with output_errors(self.path):
            self._writer.close()
        return {"sink": "mp4", "path": str(self.path), "frames": self._writer.frames_written}
