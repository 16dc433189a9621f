"""Frame folders: a folder of JPEG or PNG frames is one video, as the VOS benchmarks lay them out.

DAVIS (``JPEGImages/480p/<sequence>/00000.jpg``), YouTube-VOS (``JPEGImages/<video>/00000.jpg``) and SA-V
(``<video>/00000.jpg``) keep each video as a folder of numbered frames. The frames are taken in natural
order of their names (``frame2.png`` before ``frame10.png``); frame ``i`` is the ``i``-th file, and its
``pts`` is ``i / fps``, since image files carry no timestamps. A frame that cannot be read, or whose size
differs from the first frame's, stops the video with a :class:`VideoDecodeError` naming the file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from operators.errors import IMAGE_READ_ERRORS, VideoDecodeError, VideoOpenError
from pipeline.sources.discovery import IMAGE_EXTENSIONS, frame_files
from pipeline.sources.frames import DecodedFrame, VideoInfo, VideoReader

#: Frame rate of a frame folder unless told otherwise (``--fps``).
DEFAULT_FOLDER_FPS = 30.0


def _read(path: Path, source: str, index: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.ascontiguousarray(np.asarray(image.convert("RGB")))
    except (*IMAGE_READ_ERRORS, ValueError) as exc:
        raise VideoDecodeError(source, f"frame file {path.name} is not a readable image ({exc})", index) from None


class FrameFolderReader(VideoReader):
    """The frames of one folder behind the reader interface: ``frames(start)`` starts at file ``start``."""

    def __init__(self, folder: str | Path, fps: float = DEFAULT_FOLDER_FPS) -> None:
        if not fps > 0:
            raise ValueError(f"a frame folder's fps must be positive, got {fps}")
        self._folder = Path(folder)
        self._source = str(folder)
        self._files = frame_files(self._folder)
        if not self._files:
            kinds = ", ".join(extension[1:] for extension in IMAGE_EXTENSIONS)
            raise VideoOpenError(self._source, f"no frames ({kinds}) in the folder")
        height, width = _read(self._files[0], self._source, 0).shape[:2]
        self._fps = fps
        self.info = VideoInfo(
            path=self._source, width=width, height=height, fps=fps, frame_count=len(self._files),
            duration=len(self._files) / fps, codec=f"{self._files[0].suffix.lower()[1:]} frames",
            time_base=Fraction(fps).limit_denominator(1001) ** -1,
        )
        self.corrupt_frames: list[int] = []  # image files are decoded whole or not at all

    def frames(self, start: int = 0) -> Iterator[DecodedFrame]:
        for index in range(start, len(self._files)):
            path = self._files[index]
            image = _read(path, self._source, index)
            if image.shape[:2] != (self.info.height, self.info.width):
                raise VideoDecodeError(
                    self._source, f"frame file {path.name} is {image.shape[1]}x{image.shape[0]}, the first frame "
                                  f"{self.info.width}x{self.info.height}: a video has one frame size", index)
            yield DecodedFrame(index, index / self._fps, image)

    def close(self) -> None:
        """Nothing stays open between frames."""
