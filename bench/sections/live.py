"""``live``: N camera-like feeds served by ffmpeg on loopback, on the Ray runtime and the in-process one.

Issue 15's target: 2 feeds of 640x480 at 30 fps sustained, p95 latency under 200 ms, at most 1 % of frames
dropped, on this 2-core machine, with the default segmenter and ``xsam-pipeline live``'s defaults. Both
runtimes are the ones ``live --runtime`` builds (:func:`pipeline.live.cli.build_runner`), measured one after
the other in the same run on the same feeds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.clips import ClipSpec, make_clip
from bench.config import load, log
from bench.context import Context
from bench.feeds import StreamServer
from bench.jobs import ensure_ray
from bench.report import fmt
from bench.sampler import ClusterSampler
from operators.records import Prompt
from pipeline.live.cli import build_runner, live_stream_defaults, spec_factory
from pipeline.live.options import LiveConfig
from pipeline.live.scheduling import LATENCY_BUCKETS

NAME = "live"
TITLE = "Live feeds"
WIDTH, HEIGHT, FPS = 640, 480, 30
#: Issue 15's target, per feed: frames out at the feed's rate (within the drops allowed), p95 latency, drops.
TARGET_P95_MS, TARGET_DROP_RATE = 200.0, 0.01
RUNTIMES = ("ray", "in-process")
DEFINITION = f"""\
- **live feeds**: `live_feeds` feeds (2), each ffmpeg serving the same {WIDTH}x{HEIGHT} {FPS} fps H.264 clip
  (10 s, a keyframe a second, two moving objects, looped) as MPEG-TS over TCP on loopback, every frame at its
  time as a camera sends them (`-re` without its initial burst, stream copy: a camera encodes on its own
  hardware); TCP so that each reader's first frame is the clip's frame 0, where its one box prompt is drawn.
  Each runtime `xsam-pipeline live --runtime ray|in-process` builds (a Ray stream actor per feed; every feed on
  threads of this process) with `live`'s defaults (default segmenter, jsonl sink, queue of 4, latency budget
  0.5 s, a snapshot every 5 s), one after the other on fresh feeds. Once every feed has its first record
  (**start-up s**, from adding the feeds), `live_warmup_s` (2 s; quick 1) pass, then a window of
  `live_seconds` (8 s; quick 3) is measured from the feeds' reports: **fps in / out** = frames decoded /
  processed in the window per second; **drops** = frames the freshest-frame queue dropped in the window /
  frames decoded in it (beside it the whole run's, the connect included: FFmpeg's stream probe reads about
  0.6 s of a feed before its first frame is decoded, and those frames come out at once); **latency** = from a
  frame leaving the decoder to every sink having taken its record: its p95 in the window from the report's
  histogram buckets as Prometheus' `histogram_quantile` takes it (linear within a bucket; 200 ms is a bucket
  bound, so the target's side is exact), and beside it the whole run's p50 / p95 / max (`LatencyHistogram`, exact,
  the connect's first keyframe included). The **target** (issue 15) holds for a runtime where every feed has fps
  out >= {0.99 * FPS:g}, drops <= {TARGET_DROP_RATE:.0%} and p95 < {TARGET_P95_MS:g} ms, all in the window. CPU: our
  processes (the driver and its descendants: Ray's, the ffmpeg feeds) and other users' (the machine's busy CPU
  minus ours), in cores, over the window. `--live-load N` adds N busy loops at the normal priority beside the
  feeds, as another user of the shared machine (none by default).
"""


def _feed_clip(ctx: Context) -> tuple[Path, Prompt]:
    """The feeds' clip, cached: 10 s at 30 fps, a keyframe a second (a reader opens at one), and its prompt."""
    cache = Path(ctx.cfg.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    path, meta = cache / f"live_{WIDTH}x{HEIGHT}_{FPS}fps_s7.mp4", cache / f"live_{WIDTH}x{HEIGHT}_{FPS}fps_s7.json"
    if not (path.exists() and meta.exists()):
        spec = ClipSpec(seed=7, width=WIDTH, height=HEIGHT, num_frames=10 * FPS, fps=float(FPS), gop=FPS, speed=1.0)
        clip = make_clip(spec, path)
        meta.write_text(json.dumps({"box": list(clip.suggested_prompt("red_blob", "box").box)}))
    return path, Prompt(0, "box", box=tuple(json.loads(meta.read_text())["box"]))


def _busy(processes: int) -> list[int]:
    """Start busy loops at the normal priority outside this process tree (another user of the machine, counted as
    such by the CPU figures); their pids, to end them by."""
    loop = f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"
    return [int(subprocess.run(["sh", "-c", loop], capture_output=True, text=True, check=True).stdout)
            for _ in range(processes)]


def _wait(runner: Any, ready: Any, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        streams = runner.summary()["streams"]
        if ready(streams):
            return streams
        failed = [s for s in streams if s["status"] == "failed"]
        if failed or time.monotonic() > deadline:
            reasons = [s["error"] and s["error"]["reason"] for s in failed]
            raise RuntimeError(f"live feeds did not start within {timeout:g} s: {reasons or streams}")
        time.sleep(0.1)


def histogram_quantile(q: float, cumulative: list[int]) -> float | None:
    """The ``q`` quantile (seconds) of latencies counted in :data:`LATENCY_BUCKETS` (cumulative counts, then all),
    as Prometheus' ``histogram_quantile`` takes it: linear within its bucket, the top bound past the last one."""
    total = cumulative[-1]
    if not total:
        return None
    rank = q * total
    bucket = next(i for i, count in enumerate(cumulative) if count >= rank)
    if bucket == len(LATENCY_BUCKETS):
        return LATENCY_BUCKETS[-1]
    lower, below = (LATENCY_BUCKETS[bucket - 1], cumulative[bucket - 1]) if bucket else (0.0, 0)
    inside = cumulative[bucket] - below
    return lower + (LATENCY_BUCKETS[bucket] - lower) * (rank - below) / inside


def _window(before: dict, after: dict, final: dict, seconds: float) -> dict[str, Any]:
    """One feed's figures over the window (two reports ``seconds`` apart) and its whole run (its final report)."""
    frames_in = after["frames_in"] - before["frames_in"]
    drops = sum(after["drops"].values()) - sum(before["drops"].values())
    buckets = [a - b for a, b in zip(after["latency"]["buckets"], before["latency"]["buckets"])]
    p95 = histogram_quantile(0.95, buckets)
    latency = final["latency"]
    return {
        "fps_in": round(frames_in / seconds, 2),
        "fps_out": round((after["frames_processed"] - before["frames_processed"]) / seconds, 2),
        "drops": drops, "drop_rate": round(drops / frames_in, 4) if frames_in else None,
        "p95_ms": None if p95 is None else round(p95 * 1000, 1),
        "run_frames_in": final["frames_in"], "run_drops": sum(final["drops"].values()),
        "run_drop_rate": final["drop_rate"],
        "run_p50_ms": latency["p50_ms"], "run_p95_ms": latency["p95_ms"], "run_max_ms": latency["max_ms"],
        "keyframes": final["keyframes"], "status": final["status"],
    }


def _measure(ctx: Context, runtime: str, clip: Path, prompt: Prompt) -> dict[str, Any]:
    cfg = ctx.cfg
    log(f"live: {cfg.live_feeds} feeds on the {runtime} runtime")
    config = LiveConfig(out_dir=ctx.work / f"live-{runtime}", sinks=["jsonl"], runtime=runtime)
    make_spec = spec_factory(config, live_stream_defaults(config))
    busy = _busy(cfg.live_load)
    servers = [StreamServer(clip, "tcp", camera=True).start() for _ in range(cfg.live_feeds)]
    runner = build_runner(config)
    sampler = ClusterSampler(interval=0.5, store_interval=None)
    load_before = load()
    try:
        added = time.monotonic()
        for number, server in enumerate(servers):
            runner.add_stream(make_spec(f"feed{number}", server.url, [prompt]))
        _wait(runner, lambda streams: all(s["records_written"] for s in streams), 60)
        startup = time.monotonic() - added
        time.sleep(cfg.live_warmup_s)
        sampler.start()
        t0, before = time.monotonic(), runner.summary()["streams"]
        time.sleep(cfg.live_seconds)
        t1, after = time.monotonic(), runner.summary()["streams"]
        sampler.stop()
        runner.stop()
        runner.wait()
        final = runner.summary()["streams"]
    finally:
        runner.shutdown()
        for server in servers:
            server.kill()
        for pid in busy:
            os.kill(pid, signal.SIGKILL)
    feeds = [_window(b, a, f, t1 - t0) for b, a, f in zip(before, after, final)]
    failed = [f["stream_id"] for f in final if f["status"] != "stopped"]
    if failed:
        raise RuntimeError(f"live {runtime}: feeds {failed} did not stop cleanly: {final}")
    meets = all(f["fps_out"] >= 0.99 * FPS and f["drop_rate"] <= TARGET_DROP_RATE and f["p95_ms"] is not None
                and f["p95_ms"] < TARGET_P95_MS for f in feeds)
    return {"startup_s": round(startup, 2), "window_s": round(t1 - t0, 2), "feeds": feeds, "meets_target": meets,
            **sampler.cpu_report(), "load_before": load_before, "load_after": load()}


def run(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    ensure_ray()
    clip, prompt = _feed_clip(ctx)
    result: dict[str, Any] = {"feeds": cfg.live_feeds, "size": f"{WIDTH}x{HEIGHT}", "fps": FPS,
                              "warmup_s": cfg.live_warmup_s, "seconds": cfg.live_seconds, "busy_processes": cfg.live_load,
                              "cores": os.cpu_count()}
    for runtime in RUNTIMES:
        result[runtime] = _measure(ctx, runtime, clip, prompt)
    return result


def rows(d: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for runtime in RUNTIMES:
        r = d[runtime]
        feeds = r["feeds"]
        beside = f", {d['busy_processes']} busy processes beside" if d["busy_processes"] else ""
        where = f"{runtime}, {d['feeds']} feeds {d['size']} at {d['fps']} fps{beside}"
        found += [
            (f"{where}: fps in / out per feed", ", ".join(f"{fmt(f['fps_in'])} / {fmt(f['fps_out'])}" for f in feeds)),
            (f"{where}: p95 latency ms in the window (whole run: p50 / p95 / max) per feed",
             ", ".join(f"{fmt(f['p95_ms'])} ({fmt(f['run_p50_ms'])} / {fmt(f['run_p95_ms'])} / {fmt(f['run_max_ms'])})"
                       for f in feeds)),
            (f"{where}: drops in the {fmt(r['window_s'])} s window (whole run) per feed",
             ", ".join(f"{f['drops']} = {f['drop_rate']:.1%} ({f['run_drops']} of {f['run_frames_in']})" for f in feeds)),
            (f"{where}: start-up s; CPU cores ours / other users'",
             f"{fmt(r['startup_s'])}; {fmt(r['our_cpu_cores'])} / {fmt(r.get('others_cpu_cores'))}"),
            (f"{where}: meets the target (>= {0.99 * FPS:g} fps, p95 < {TARGET_P95_MS:g} ms, drops <= "
             f"{TARGET_DROP_RATE:.0%})", "yes" if r["meets_target"] else "no"),
        ]
    return found
