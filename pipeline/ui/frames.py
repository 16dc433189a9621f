"""Frame N of a source as JPEG for the page, and as RGB for the segmenter, decoded by the pipeline's readers.

Scrubbing asks for many frames in a row: each source keeps one reader open, a request for the frame after
the last one decoded continues its iteration instead of seeking, and recent frames are kept (JPEG bytes for
the page, a few RGB arrays for previews).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from operators.errors import PipelineError
from pipeline.sources import DecodedFrame, VideoInfo, VideoReader, open_video

JPEG_QUALITY = 85


@dataclass
class _OpenSource:
    reader: VideoReader
    frames: Iterator[DecodedFrame] | None = None
    next_index: int = 0  # the index ``frames`` yields next


class FrameStore:
    """Decoded frames of local sources, thread-safe (FastAPI answers requests from a thread pool)."""

    def __init__(self, open_sources: int = 4, cached_jpegs: int = 512, cached_images: int = 8) -> None:
        self._lock = threading.Lock()
        self._sources: OrderedDict[Path, _OpenSource] = OrderedDict()
        self._jpegs: OrderedDict[tuple[Path, int], bytes] = OrderedDict()
        self._images: OrderedDict[tuple[Path, int], np.ndarray] = OrderedDict()
        self._limits = (open_sources, cached_jpegs, cached_images)

    def info(self, path: Path) -> VideoInfo:
        with self._lock:
            return self._source(path).reader.info

    def image(self, path: Path, index: int) -> np.ndarray:
        """Frame ``index`` as RGB ``uint8`` (H, W, 3); :class:`PipelineError` past the end."""
        with self._lock:
            key = (path, index)
            if key in self._images:
                self._images.move_to_end(key)
                return self._images[key]
            image = self._decode(path, index)
            _remember(self._images, key, image, self._limits[2])
            return image

    def jpeg(self, path: Path, index: int) -> bytes:
        with self._lock:
            key = (path, index)
            if key in self._jpegs:
                self._jpegs.move_to_end(key)
                return self._jpegs[key]
        buffer = io.BytesIO()
        Image.fromarray(self.image(path, index)).save(buffer, "JPEG", quality=JPEG_QUALITY)
        with self._lock:
            _remember(self._jpegs, key, buffer.getvalue(), self._limits[1])
        return buffer.getvalue()

    def close(self) -> None:
        with self._lock:
            for source in self._sources.values():
                source.reader.close()
            self._sources.clear()

    def _source(self, path: Path) -> _OpenSource:
        if path in self._sources:
            self._sources.move_to_end(path)
            return self._sources[path]
        source = _OpenSource(open_video(path))
        self._sources[path] = source
        while len(self._sources) > self._limits[0]:
            self._sources.popitem(last=False)[1].reader.close()
        return source

    def _decode(self, path: Path, index: int) -> np.ndarray:
        if index < 0:
            raise PipelineError(str(path), f"frame {index} is negative")
        source = self._source(path)
        if source.frames is None or index != source.next_index:
            if source.frames is not None:
                source.frames.close()  # a reader runs one iteration at a time
            source.frames, source.next_index = source.reader.frames(index), index
        try:
            frame = next(source.frames, None)
        except Exception:
            source.frames = None
            raise
        if frame is None:
            source.frames = None
            known = source.reader.info.frame_count
            size = f" (it has {known} frames)" if known else ""
            raise PipelineError(str(path), f"past the end of the video{size}", index)
        source.next_index = frame.index + 1
        return frame.image


def _remember(cache: OrderedDict, key: object, value: object, limit: int) -> None:
    cache[key] = value
    while len(cache) > limit:
        cache.popitem(last=False)
