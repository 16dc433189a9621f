"""A live feed as a :class:`~pipeline.sources.VideoReader` a :class:`~pipeline.session.StreamSession` hosts.

A reader thread decodes the feed (:class:`~pipeline.sources.LiveReader`, which reconnects with backoff
under the same stream) into a :class:`~pipeline.live.scheduling.FreshestFrameQueue`; :meth:`FeedReader.frames`
hands the session the queue's frames and, in their place, a :class:`~operators.stream.DroppedFrame` for each
frame the queue dropped, so every frame gets its record in order.

A restarted stream (its session resumed from a snapshot at frame ``start``) first yields the frames it missed
while no actor ran it, estimated from the snapshot's age and the feed's frame rate, as dropped frames of
reason ``worker_restarted``; the feed's own frames follow, their indices and timestamps shifted past that gap.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable, Iterator

import numpy as np

from operators.stream import DroppedFrame
from pipeline.live.scheduling import WORKER_RESTARTED, FreshestFrameQueue
from pipeline.sources import LiveFrame, LiveReader, VideoReader


class FeedReader(VideoReader):
    """``reader``'s frames through ``queue``; see the module docstring.

    ``restarted_at``: the wall-clock time the snapshot a restart resumes from was taken (None: a first start).
    ``on_resumed`` runs once the gap is out, before the feed's first frame (the host asks for a keyframe there:
    the scene moved on meanwhile). ``taken`` keeps each frame handed out until its record is seen
    (:meth:`take`): its capture time (for latency) and its image (for the annotated latest frame).
    """

    def __init__(self, reader: LiveReader, queue: FreshestFrameQueue, restarted_at: float | None = None,
                 on_resumed: Callable[[], None] | None = None) -> None:
        self.reader, self.queue = reader, queue
        self.fps = reader.info.fps if reader.info.fps > 0 else 30.0  # a feed that declares none: a camera's usual
        self.info = dataclasses.replace(reader.info, fps=self.fps)
        self.corrupt_frames: list[int] = []
        self.restarted_at, self.on_resumed = restarted_at, on_resumed
        self.frames_in = 0
        self.first_frame_at: float | None = None  # fps are measured from the first frame (not the open)
        self.offset = 0  # added to the feed's indices: past a restart's gap
        self.gap: tuple[int, int] | None = None  # a restart's missed frames, first and last
        self.taken: dict[int, tuple[float, np.ndarray]] = {}
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name=f"reader-{reader.source}", daemon=True)

    def frames(self, start: int = 0) -> Iterator[LiveFrame | DroppedFrame]:
        if start and self.restarted_at is None:
            raise ValueError(f"{self.reader.source}: a live feed starts at frame 0 unless it is restarted")
        if start:
            self.offset = start + max(1, round(max(0.0, time.time() - self.restarted_at) * self.fps))
            self.gap = (start, self.offset - 1)
            blank = np.zeros((self.info.height, self.info.width, 3), np.uint8)  # one image for the whole gap
            for index in range(start, self.offset):
                yield DroppedFrame(index, index / self.fps, blank, WORKER_RESTARTED)
            if self.on_resumed is not None:
                self.on_resumed()
        self._thread.start()
        shift = self.offset / self.fps
        while True:
            frame, dropped = self.queue.get(timeout=0.2)
            for lost, cause in dropped:
                yield DroppedFrame(lost.index + self.offset, lost.pts + shift, lost.image, cause)
            if frame is not None:
                frame = dataclasses.replace(frame, index=frame.index + self.offset, pts=frame.pts + shift)
                self.taken[frame.index] = (frame.captured, frame.image)
                yield frame
            elif self.queue.closed and not len(self.queue):
                break
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _read(self) -> None:
        try:
            for frame in self.reader.frames():
                if self.first_frame_at is None:
                    self.first_frame_at = frame.captured
                self.frames_in += 1
                self.queue.put(frame)
        except Exception as exc:  # noqa: BLE001 - raised by frames() once the frames before it have their records
            self.error = exc
        finally:
            self.queue.close()

    def take(self, frame_index: int) -> tuple[float, np.ndarray] | None:
        """The capture time and image of a frame handed out (None for a dropped one), forgotten here."""
        return self.taken.pop(frame_index, None)

    def stop(self) -> None:
        """End the feed: frames already queued are still handed out."""
        self.reader.stop()

    def close(self) -> None:
        self.reader.stop()
        self.queue.close()  # an archive-mode reader waiting for room must not wait for ever
        if self._thread.is_alive():
            self._thread.join()
        self.reader.close()
