"""H.264 MP4 writing through PyAV (``cv2.VideoWriter`` has no H.264 encoder in the wheels)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class H264Writer:
    """Writes RGB ``uint8`` frames to an H.264 MP4; width and height are rounded down to even."""

    def __init__(
        self, path: str | Path, fps: float, width: int, height: int, crf: int = 23, gop: int | None = None
    ) -> None:
        self.path = Path(path)
        self.width, self.height = width - width % 2, height - height % 2
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width, self._stream.height = self.width, self.height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(crf), "preset": "veryfast", **({"g": str(gop)} if gop else {})}
        self.frames_written = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[: self.height, : self.width]), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def __enter__(self) -> "H264Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
