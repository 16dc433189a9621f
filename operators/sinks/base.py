"""What every sink shares: the stream description, the ``Sink`` protocol and per-stream output folders.

A sink writes one stream's :class:`~operators.records.FrameRecord` objects, in
frame order, somewhere durable. Sinks know nothing about Ray: the runtime builds
one sink instance per stream, calls ``open`` once, ``write`` per frame and
``close`` at the end.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

from operators.errors import OutputError
from operators.records import FrameRecord


@dataclass(frozen=True)
class StreamInfo:
    """What a sink needs to know about a stream before its first frame arrives."""

    stream_id: str
    source: str  # file path or URL, for error messages and summaries
    width: int
    height: int
    fps: float

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"stream {self.stream_id!r}: size {self.width}x{self.height} is not positive")
        if not self.fps > 0:
            raise ValueError(f"stream {self.stream_id!r}: fps {self.fps} is not positive")


@runtime_checkable
class Sink(Protocol):
    """Writes one stream's records.

    ``needs_image`` is False when the sink never reads ``record.image``: the
    stream then keeps no frame pixels in its records unless another sink needs them.

    ``open(stream, start_frame=k)`` resumes a stream at frame ``k``: the sink
    keeps what an earlier run wrote for frames before ``k`` and nothing after,
    so no frame is written twice. Each sink documents what that means for it.
    A sink may also have ``checkpoint() -> bool``: called, with every record so far written, before the
    runtime saves a stream checkpoint, to make those records durable; False when they are not (a broker
    that is down): the checkpoint is then not saved, and a restart resumes from an earlier one.
    """

    needs_image: bool

    def open(self, stream: StreamInfo, start_frame: int = 0) -> None: ...

    def write(self, record: FrameRecord) -> None: ...

    def close(self) -> dict:
        """Finish writing and say what was written (paths, frame counts)."""
        ...


@contextmanager
def output_errors(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into an :class:`OutputError` naming it and the OS reason."""
    try:
        yield
    except OSError as exc:
        raise OutputError(str(path), f"cannot write: {exc.strerror or exc}") from exc


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and prove it writable now, so a bad path fails before any frame is decoded."""
    path = Path(out_dir)
    with output_errors(path):
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    return path


def stream_dir(out_dir: Path, stream_id: str, *subdirs: str) -> Path:
    """Create and return ``out_dir/<stream_id>/<subdirs...>``.

    The stream id must be a single plain path component, so one stream can never
    write into another's folder or outside ``out_dir``.
    """
    if stream_id in ("", ".", "..") or any(c in stream_id for c in "/\\\0"):
        raise OutputError(str(out_dir), f"stream id {stream_id!r} is not usable as a folder name")
    path = out_dir.joinpath(stream_id, *subdirs)
    with output_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    return path
