"""Errors that name what failed, where, and why, so a batch can report them and carry on."""

from __future__ import annotations

import traceback as tracebacks

from PIL import Image
from typing_extensions import NotRequired, TypedDict  # pydantic validates reports: it needs this TypedDict before 3.12

#: What reading an image file can raise for bad input: unreadable, not an image (PIL's UnidentifiedImageError is an
#: OSError), truncated, or too large to decode (a small PNG can hold a 225-megapixel "decompression bomb").
IMAGE_READ_ERRORS = (OSError, Image.DecompressionBombError)


class ErrorRecord(TypedDict):
    """What a report says about a failure: the error's kind, where (``source``, ``frame_index``) and why;
    ``traceback`` only for an unexpected error (a bug, not bad input)."""

    error: str
    source: str
    frame_index: int | None
    reason: str
    traceback: NotRequired[str]


def error_record(exc: BaseException, source: str, frame_index: int | None = None, *, kind: str | None = None,
                 reason: str | None = None, traceback: bool = False) -> ErrorRecord:
    """The one way a failure becomes a report's error: a :class:`PipelineError` speaks for itself; any other
    exception is named by its type (or ``kind``) at ``source`` and ``frame_index``."""
    if isinstance(exc, PipelineError) and kind is None and reason is None:
        return exc.to_dict()
    record = ErrorRecord(error=kind or type(exc).__name__, source=str(source), frame_index=frame_index,
                         reason=reason or str(exc) or repr(exc))
    if traceback:
        record["traceback"] = "".join(tracebacks.format_exception(exc, limit=6))
    return record


class PipelineError(Exception):
    """Base error: ``source`` (file or URL), optional ``frame_index`` and a human ``reason``."""

    def __init__(self, source: str, reason: str, frame_index: int | None = None) -> None:
        self.source = str(source)
        self.reason = reason
        self.frame_index = frame_index
        where = self.source if frame_index is None else f"{self.source}, frame {frame_index}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self) -> tuple:
        """Pickles with its own arguments (Exception's default replays only the message), so it survives a
        process boundary: a Ray worker's, or a child process's."""
        return type(self), (self.source, self.reason, self.frame_index)

    @property
    def kind(self) -> str:
        return type(self).__name__

    def to_dict(self) -> ErrorRecord:
        return {"error": self.kind, "source": self.source, "frame_index": self.frame_index, "reason": self.reason}


class VideoOpenError(PipelineError):
    """The video is missing, empty, not a video, its container cannot be parsed, or its frames are too small to track."""


class UnsupportedCodecError(PipelineError):
    """The container holds a video stream no available decoder can read."""


class VideoDecodeError(PipelineError):
    """Decoding failed part-way (truncated or corrupt data); frames before ``frame_index`` were delivered."""


class InvalidPromptError(PipelineError):
    """A prompt outside the frame, on a frame past the end, or unreadable."""


class SegmenterError(PipelineError):
    """The segmenter failed on a frame (after the runtime's retries)."""


class OutputError(PipelineError):
    """The output location cannot be written."""


class SinkWriteError(PipelineError):
    """A sink could not write a frame's record (disk full, broker gone); records before it were written."""
