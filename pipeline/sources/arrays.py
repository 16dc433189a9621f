"""Frames a program already holds (numpy arrays from a camera SDK, a generator) read as one video.

Frame ``i`` is the ``i``-th item; its ``pts`` is ``i / fps``. Each item is an RGB ``uint8`` (H, W, 3) array
or anything with an ``image`` array (a :class:`~pipeline.sources.frames.DecodedFrame`); the first one fixes
the stream's size, and an item that is not such a frame stops the video with a :class:`VideoDecodeError`
naming it. The items are read once: ``frames(start)`` may be called once, from any ``start``.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from typing import Any, Iterable, Iterator

import numpy as np

from operators.errors import VideoDecodeError, VideoOpenError
from pipeline.sources.frame_folders import DEFAULT_FOLDER_FPS
from pipeline.sources.frames import DecodedFrame, VideoInfo, VideoReader

#: How a stream of in-memory frames is named in reports and errors.
ARRAY_SOURCE = "<frames>"


def _image(item: Any, source: str, index: int) -> np.ndarray:
    image = getattr(item, "image", item)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise VideoDecodeError(source, f"a frame is an RGB uint8 (H, W, 3) array; got a {what}", index)
    return np.ascontiguousarray(image)


class ArrayReader(VideoReader):
    """An iterable of frames behind the reader interface."""

    def __init__(self, frames: Iterable[Any], fps: float = DEFAULT_FOLDER_FPS, source: str = ARRAY_SOURCE) -> None:
        if not fps > 0:
            raise ValueError(f"frames' fps must be positive, got {fps}")
        self._items = iter(frames)
        self._source, self._fps = source, fps
        first = next(self._items, None)
        if first is None:
            raise VideoOpenError(source, "no frames")
        self._first = _image(first, source, 0)
        height, width = self._first.shape[:2]
        count = len(frames) if hasattr(frames, "__len__") else None
        self.info = VideoInfo(path=source, width=width, height=height, fps=fps, frame_count=count,
                              duration=None if count is None else count / fps, codec="arrays",
                              time_base=Fraction(fps).limit_denominator(1001) ** -1)
        self.corrupt_frames: list[int] = []
        self._read = False

    def frames(self, start: int = 0) -> Iterator[DecodedFrame]:
        if self._read:
            raise RuntimeError(f"{self._source}: in-memory frames can be read once")
        self._read = True
        for index, item in enumerate(itertools.chain([self._first], self._items)):
            image = self._first if index == 0 else _image(item, self._source, index)
            if image.shape[:2] != self._first.shape[:2]:
                raise VideoDecodeError(self._source, f"frame {index} is {image.shape[1]}x{image.shape[0]}, the first "
                                       f"{self.info.width}x{self.info.height}: a video has one frame size", index)
            if index >= start:
                yield DecodedFrame(index, index / self._fps, image)

    def close(self) -> None:
        """The items belong to the caller."""
