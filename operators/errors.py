"""Errors that name what failed, where, and why, so a batch can report them and carry on."""

from __future__ import annotations


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

    def to_dict(self) -> dict:
        return {"error": self.kind, "source": self.source, "frame_index": self.frame_index, "reason": self.reason}


class VideoOpenError(PipelineError):
    """The video is missing, empty, not a video, or its container cannot be parsed."""


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
