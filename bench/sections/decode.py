"""``decode``: PyAV alone (``pipeline.sources.open_video``) on the benchmark clips, frames/s.

With one decoder thread (the cost per core) and with FFmpeg's automatic thread count (what
``StreamWorker`` uses), plus ``keyframes_only`` decode (keyframes/s and source frames covered/s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from bench.context import Context
from bench.report import fmt
from pipeline.sources import open_video

NAME = "decode"
TITLE = "Decode ceiling"
DEFINITION = """\
- **decode ceiling**: `pipeline.sources.open_video` alone on the benchmark clips, frames/s; one decoder
  thread (the cost per core) and FFmpeg's automatic thread count (what `StreamWorker` uses). Keyframes-only
  decode (`keyframes_only=True`) reports keyframes/s and source frames covered/s.
"""


def measure_decode(paths: Sequence[Path], threads: int = 1, keyframes_only: bool = False) -> dict[str, Any]:
    """Frames/s of ``open_video`` alone; with one thread also the CPU ms per frame (calling thread)."""
    frames = covered = 0
    seconds = cpu = 0.0
    for path in paths:
        started, cpu_started = time.perf_counter(), time.thread_time()
        with open_video(path, threads=threads, keyframes_only=keyframes_only) as video:
            declared = video.info.frame_count or 0
            count = sum(1 for _ in video.frames())
        seconds += time.perf_counter() - started
        cpu += time.thread_time() - cpu_started
        frames += count
        covered += declared if keyframes_only else count
    result = {"frames": frames, "seconds": round(seconds, 4), "fps": round(frames / seconds, 1)}
    if threads == 1:
        result["cpu_ms_per_frame"] = round(1e3 * cpu / frames, 4)
    if keyframes_only:
        result["covered_fps"] = round(covered / seconds, 1)
    return result


def run(ctx: Context) -> dict[str, Any]:
    paths = [c.path for c in ctx.clips()]
    measure_decode(paths[:1])  # file cache and codec warm-up
    result = {
        "clips": len(paths),
        "size": f"{ctx.cfg.width}x{ctx.cfg.height}",
        "threads_1": measure_decode(paths, threads=1),
        "threads_auto": measure_decode(paths, threads=0),
    }
    try:
        result["keyframes_only"] = measure_decode(paths, threads=1, keyframes_only=True)
    except Exception as exc:  # noqa: BLE001 - a reader without the mode is reported, not fatal
        result["keyframes_only"] = {"skipped": f"{type(exc).__name__}: {exc}"}
    result["fps"] = result["threads_1"]["fps"]
    return result



def rows(d: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        (f"PyAV decode, 1 thread, {d['size']} (fps)", fmt(d["threads_1"]["fps"])),
        ("PyAV decode, auto threads (fps)", fmt(d["threads_auto"]["fps"])),
    ]
    k = d.get("keyframes_only", {})
    if "fps" in k:
        found.append(("keyframes-only decode: keyframes/s (source frames covered/s)", f"{k['fps']} ({k['covered_fps']})"))
    return found
