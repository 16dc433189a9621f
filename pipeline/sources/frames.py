"""What a source declares and what it yields: the records every reader shares."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

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
