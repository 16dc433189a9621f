"""What a source declares and what it yields: the records and the reader interface every reader shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about its video stream, read once at open."""

    path: str  # the source as given: a file path today, a URL once live sources land
    width: int
    height: int
    fps: float  # average frame rate; 0.0 if the container declares none
    frame_count: int | None  # declared by the container (MP4, AVI); None where it declares none (MKV)
    duration: float | None  # seconds
    codec: str
    time_base: Fraction


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """One decoded frame: ``index`` in presentation order, ``pts`` in seconds, RGB ``uint8`` (H, W, 3)."""

    index: int
    pts: float
    image: np.ndarray


class VideoReader(ABC):
    """Decodes one video. ``frames()`` may be called again, from any ``start``, one iteration at a time.

    ``corrupt_frames``: indices of the last ``frames()`` run's frames that were decoded from damaged data
    and patched by the decoder (error concealment), where the decoder says so.
    """

    info: VideoInfo
    corrupt_frames: list[int]

    @abstractmethod
    def frames(self, start: int = 0) -> Iterator[DecodedFrame]:
        """Yield frames from index ``start`` on; raise :class:`VideoDecodeError` where decoding fails."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
