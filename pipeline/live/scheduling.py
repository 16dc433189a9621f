"""Live scheduling: the freshest-frame queue between a feed's reader and its processing, and latency figures.

The queue holds at most ``queue_size`` frames. When processing falls behind, the oldest frames are dropped
(``dropped_queue_full``) and a frame older than ``latency_budget`` seconds is dropped in favour of a newer
one already waiting (``dropped_latency``). Every dropped frame still gets a record, kind ``skipped`` with
that reason, in frame order. ``mode="archive"`` never drops: the reader waits for room instead.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from enum import Enum
from typing import Any, Literal

import numpy as np

from pipeline.sources import LiveFrame

Mode = Literal["live", "archive"]
DROP_QUEUE_FULL = "dropped_queue_full"
DROP_LATENCY = "dropped_latency"
#: The skipped records' reason for the frames a feed lost while its stream actor was restarted.
WORKER_RESTARTED = "worker_restarted"


class StreamStatus(str, Enum):
    """A live stream's status, as its report and the HTTP API give it."""

    CONNECTING = "connecting"  # opening its feed
    CONNECTED = "connected"  # open, no frame processed yet
    RUNNING = "running"
    RECONNECTING = "reconnecting"  # the feed dropped (retrying with backoff), or its stream actor is restarted
    STOPPED = "stopped"
    FAILED = "failed"


ENDED = (StreamStatus.STOPPED, StreamStatus.FAILED)
#: The status a reader's event puts its stream in.
READER_STATUS = {"connected": StreamStatus.CONNECTED, "disconnected": StreamStatus.RECONNECTING,
                 "reconnected": StreamStatus.RUNNING}


class FreshestFrameQueue:
    """A bounded frame queue between a reader and a processing loop.

    ``mode="live"``: :meth:`put` never blocks; a full queue drops its oldest frame. :meth:`get`
    returns the oldest frame unless it is older than ``latency_budget`` and a newer frame waits, in
    which case the stale ones are dropped. ``mode="archive"``: :meth:`put` waits for room, nothing
    is ever dropped. Dropped frames are handed to the consumer by :meth:`get` as
    ``(frame, cause)`` pairs, so each one can still get a record.
    """

    def __init__(self, capacity: int = 4, latency_budget: float | None = 0.5, mode: Mode = "live") -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be >= 1")
        self.capacity = capacity
        self.latency_budget = latency_budget
        self.mode = mode
        self._frames: deque[LiveFrame] = deque()
        self._dropped: list[tuple[LiveFrame, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self.drops: dict[str, int] = {DROP_QUEUE_FULL: 0, DROP_LATENCY: 0}
        self.max_depth = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: LiveFrame) -> None:
        with self._cond:
            if self.mode == "archive":
                while len(self._frames) >= self.capacity and not self._closed:
                    self._cond.wait(0.1)
            elif len(self._frames) >= self.capacity:
                self._drop(self._frames.popleft(), DROP_QUEUE_FULL)
            self._frames.append(frame)
            self.max_depth = max(self.max_depth, len(self._frames))
            self._cond.notify_all()

    def _drop(self, frame: LiveFrame, cause: str) -> None:
        self._dropped.append((frame, cause))
        self.drops[cause] += 1

    def get(self, timeout: float | None = None) -> tuple[LiveFrame | None, list[tuple[LiveFrame, str]]]:
        """(the next frame or None when closed and empty / on timeout, frames dropped since the last call)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._frames and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            frame = None
            if self._frames:
                if self.mode == "live" and self.latency_budget is not None:
                    now = time.monotonic()
                    while len(self._frames) > 1 and now - self._frames[0].captured > self.latency_budget:
                        self._drop(self._frames.popleft(), DROP_LATENCY)
                frame = self._frames.popleft()
                self._cond.notify_all()
            dropped, self._dropped = self._dropped, []
            return frame, dropped

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


#: Upper bounds (seconds) of the latency histogram's buckets: a live frame is worth something for about a second.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)


class LatencyHistogram:
    """End-to-end latencies in seconds: each counted in cumulative buckets (:data:`LATENCY_BUCKETS`), which
    Prometheus takes as a histogram, rates and quantiles over any window; the last ``window`` kept for the
    summary's percentiles."""

    def __init__(self, window: int = 10_000) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._counts = [0] * (len(LATENCY_BUCKETS) + 1)  # per bucket, the last one above every bound
        self.count = 0
        self.sum = 0.0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)
            self._counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.count += 1
            self.sum += seconds

    def figures(self) -> dict[str, Any]:
        """``p50_ms``, ``p95_ms``, ``max_ms`` of the window; ``count``, ``sum_s`` and ``buckets`` (observations at or
        under each bound of :data:`LATENCY_BUCKETS`, then all of them) since the start."""
        with self._lock:
            values = np.fromiter(self._values, float) if self._values else None
            counts, total, count = list(self._counts), self.sum, self.count
        figures: dict[str, Any] = {"p50_ms": None, "p95_ms": None, "max_ms": None}
        if values is not None:
            p50, p95 = np.percentile(values, [50, 95])
            figures = {"p50_ms": round(float(p50) * 1000, 1), "p95_ms": round(float(p95) * 1000, 1),
                       "max_ms": round(float(values.max()) * 1000, 1)}  # plain floats, as JSON wants
        return {**figures, "count": count, "sum_s": round(total, 6), "buckets": np.cumsum(counts).tolist()}
