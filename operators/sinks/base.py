"""What every sink shares: the stream description, and the ``Sink`` protocol.

A sink writes one stream's :class:`~operators.records.FrameRecord` objects, in
frame order, somewhere durable. Sinks know nothing about Ray: the runtime builds
one sink instance per stream, calls ``open`` once, ``write`` per frame and
``close`` at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

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
