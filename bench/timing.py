"""Timing helpers shared by the sections: OpenCV's thread count, per-step wall and CPU time."""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any, Callable, Iterator, Sequence

import cv2


@contextlib.contextmanager
def cv2_threads(n: int | None) -> Iterator[None]:
    """OpenCV's thread count inside the block (``None``: leave OpenCV's default)."""
    before = cv2.getNumThreads()
    if n is not None:
        cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def ms_summary(samples: Sequence[float]) -> dict[str, float]:
    return {"mean": round(1e3 * statistics.fmean(samples), 3), "p50": round(1e3 * statistics.median(samples), 3)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


class Steps:
    """Wall and calling-thread CPU time per named step (CPU time is what contention does not inflate)."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def time(self, name: str, fn: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        value = fn()
        self.cpu.setdefault(name, []).append(time.thread_time() - cpu)
        self.wall.setdefault(name, []).append(time.perf_counter() - wall)
        return value

    def ms(self, name: str) -> dict[str, float]:
        return {**ms_summary(self.wall[name]), "cpu_mean": round(1e3 * statistics.fmean(self.cpu[name]), 3)}

    def mean(self, name: str, cpu: bool = False) -> float:
        return 1e3 * statistics.fmean((self.cpu if cpu else self.wall)[name])



class StepTotals:
    """Seconds per named step, added up over a run: the :data:`operators.stream.StepTimer` the breakdown
    hands ``StreamProcessor``, and what it uses to time its own decode, keyframe and emit calls."""

    def __init__(self, names: Sequence[str]) -> None:
        self.seconds = dict.fromkeys(names, 0.0)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started
