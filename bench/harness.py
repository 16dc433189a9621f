"""Benchmark harness (issue #6, part 1): throughput ceilings, end-to-end efficiency, memory, a naive baseline.

Run it with ``python -m bench`` (see ``bench/__main__.py`` for the options). Every section returns a
plain dict; :func:`run` collects them with a description of the machine. Figures are only comparable
within one run (the machines this runs on are shared and noisy), so every ratio is computed from
figures measured in the same run, close together in time.

Sections and their definitions (also written to BENCHMARKS.md):

``decode``
    PyAV alone (``pipeline.sources.open_video``) on the benchmark clips, frames/s, with one decoder
    thread (the cost per core) and with FFmpeg's automatic thread count (what ``StreamWorker`` uses),
    plus ``keyframes_only`` decode (keyframes/s and source frames covered/s).
``segmenter``
    The default segmenter's steps on one clip at the clip size, one OpenCV thread (as the actors run):
    keyframe step = ``segment`` + ``refresh`` (what ``run_keyframe`` does per keyframe; ``encode_prompts``
    once per prompt, reported apart), propagation step =
    ``FlowPropagator.flow`` + ``warp``, in ms per frame. ``segmenter_fps(K) = 1000 / (seg_ms / K +
    prop_ms * (K - 1) / K)``. ``operator_fps(K)`` is what the pipeline really runs per frame: flow and
    warp on every frame (keyframes too, for association), ``segment`` + ``refresh`` on keyframes, the
    scene-cut signature and the sink's record encoding (RLE + JSON); decode excluded.
``breakdown``
    One stream's frame by step: every clip through ``run_stream`` on one thread (keyframes in-process with
    ``local_submit``, the sink's record encoding done in ``emit``), each step's functions wrapped with a
    timer. Says which steps the capacity formula counts (decode, ``segment`` + ``refresh``, flow and warp
    on propagated frames) and which it does not (flow and warp to keyframes, association, the scene-cut
    signature, flow support, record encoding), and so the efficiency one thread could reach at best.
    Decode on one FFmpeg thread, as each of several streams decodes. After the pipeline section: the
    N-stream run's wall efficiency as that ceiling x streams in parallel vs one thread x wall vs steady.
``xsam``
    Delegated to ``bench.xsam_bench`` (owned elsewhere) when that module exposes a function returning
    a dict; skipped otherwise, with the reason.
``pipeline``
    ``pipeline.job.run_job`` on Ray, archive mode, sinks=["jsonl"], 1 stream and N streams at once
    (``parallel=N``). Ray is started (and warmed with a tiny job) before the timed region; the timed
    region is the ``run_job`` call, so it includes the per-job actor start-up (``wall``); ``steady``
    excludes the stream actors' start-up (frames / the longest ``StreamWorker.run``). Efficiency:
    1 stream: ``e2e_fps / min(decode_fps, segmenter_fps)``; N streams: ``e2e_fps / capacity_N`` with
    ``capacity_N = min(N, cores) / (1 / decode_fps + 1 / segmenter_fps)``: every frame costs one
    decode plus the segmenter's amortised per-frame cost on one core, and the cores work in parallel.
    ``segmenter_fps`` is the segmenter doing the run's work: each video's step costs on its own frames,
    weighted by the keyframes the run made, re-anchoring ones at their own cost (:func:`segmenter_ms_per_frame`;
    the fixed interval K alone is reported beside it). ``decode_fps`` (one thread) and the step costs are measured right before and
    right after each timed run and averaged. With psutil, the CPU time of every process of the cluster is accounted
    too (``cpu_efficiency`` = ideal CPU ms per frame / actual; robust to other users of the machine).
``naive``
    What a user would write instead: decode every frame with PyAV and run the default segmenter's full
    keyframe path (``segment``) on every frame, one process, no Ray, library threading left at its
    defaults. Speedup = our end-to-end fps / naive fps on the same clips (K from the config). J&F on the
    clips' ground truth: ours with ``matching="track"``; the naive run with ``matching="frame"``
    (per-frame Hungarian, generous to it) and with track ids from the project's ``TrackAssigner`` on
    consecutive frames (``matching="track"``, like for like).
``memory``
    One stream through the pipeline on videos of increasing length (a short synthetic clip looped
    losslessly by remuxing its packets with shifted timestamps). A thread samples the RSS of the driver
    and every Ray worker process of this cluster (psutil) and the plasma store's bytes in use; peaks
    are per run; the headline is the peak of (driver + pipeline actors) for the longest run minus the
    shortest (idle pooled workers and Ray's own processes are reported apart).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import inspect
import json
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import av
import cv2
import numpy as np

from bench.clips import ClipSpec, SyntheticClip, make_clip
from operators.records import FrameRecord, Instances, Prompt
from pipeline.sources import open_video

#: In run order. The breakdown runs last: what its frames leave in the driver's heap would otherwise be
#: returned to the system during the memory section and read as the driver shrinking with video length.
SECTIONS = ("decode", "segmenter", "xsam", "pipeline", "naive", "memory", "breakdown")
#: X-SAM tiny alone takes ~15 s on 2 cores: --quick runs it only when named in --only.
QUICK_SECTIONS = tuple(s for s in SECTIONS if s != "xsam")
#: Sections that need neither Ray nor long clips (what the fast test runs).
CHEAP_SECTIONS = ("decode", "segmenter", "breakdown")

#: Clip variants cycled over the streams: plain, occluded, another kind, faster motion.
_VARIANTS: tuple[dict[str, Any], ...] = ({}, {"occlusion": True}, {"kinds": ("blue_tile",)}, {"speed": 2.5})


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    """Every size and length the benchmark uses; ``quick()`` gives the < 1 minute variant."""

    quick: bool = False
    width: int = 1280  # 720p: what archives hold; at 320x240 `segment` costs less than a flow step
    height: int = 720
    frames: int = 450  # per clip, for decode / segmenter / pipeline / naive
    streams: int = 4
    keyframe_every: int = 10
    micro_frames: int = 60  # frames timed per segmenter step
    mem_lengths: tuple[int, ...] = (1000, 10000, 30000)
    mem_width: int = 160
    mem_height: int = 120
    loop_unit: int = 250  # frames of the clip the memory section loops
    sample_s: float = 0.2  # RSS sampling period
    store_sample_s: float = 0.5  # object-store sampling period
    cache_dir: str = field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "xsam-bench-cache"))
    work_dir: str | None = None  # pipeline outputs; a temporary folder when None
    keep_outputs: bool = False
    warmup: bool = True  # a tiny untimed job before the timed pipeline runs (first-use costs)

    @classmethod
    def quick_config(cls, **overrides: Any) -> "BenchConfig":
        base = dict(quick=True, width=320, height=240, frames=60, micro_frames=20, mem_lengths=(200, 600),
                    loop_unit=100, warmup=False)
        return cls(**{**base, **overrides})

    def clip_specs(self) -> list[ClipSpec]:
        return [
            ClipSpec(seed=i + 1, width=self.width, height=self.height, num_frames=self.frames, **_VARIANTS[i % len(_VARIANTS)])
            for i in range(max(1, self.streams))
        ]


def cores() -> int:
    return os.cpu_count() or 1


# --------------------------------------------------------------------------- machine


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, RAM, date, load and the versions that decide the figures."""
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cores": cores(),
        "cpu_model": model or platform.processor() or "unknown",
        "ram_gb": ram_gb,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {
            "torch": _version("torch"),
            "ray": _version("ray"),
            "av": _version("av"),
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "psutil": _version("psutil"),
        },
    }


# --------------------------------------------------------------------------- clips


@dataclass
class BenchClip:
    """An encoded clip, its prompt and its ground truth packed 8 pixels a byte (unpacked for scoring)."""

    path: Path
    prompt: Prompt
    frames: int
    shape: tuple[int, int]  # (H, W)
    packed_truth: list[dict[int, np.ndarray]] = field(repr=False)

    @classmethod
    def of(cls, clip: SyntheticClip) -> "BenchClip":
        first_kind = clip.kinds[min(clip.kinds)]
        prompt = clip.suggested_prompt(first_kind, "box")
        packed = [{o: np.packbits(m) for o, m in frame.items()} for frame in clip.masks]
        return cls(clip.path, prompt, clip.num_frames, (clip.spec.height, clip.spec.width), packed)

    def truth(self) -> list[dict[int, np.ndarray]]:
        h, w = self.shape
        return [{o: np.unpackbits(p, count=h * w).reshape(h, w).astype(bool) for o, p in f.items()} for f in self.packed_truth]


def make_bench_clips(specs: Sequence[ClipSpec], folder: Path) -> list[BenchClip]:
    folder.mkdir(parents=True, exist_ok=True)
    return [BenchClip.of(make_clip(spec, folder / f"clip_s{spec.seed}.mp4")) for spec in specs]


def loop_video(src: str | Path, dst: str | Path, times: int) -> Path:
    """Write ``src`` ``times`` times back to back into ``dst`` without re-encoding.

    Each copy's packets are muxed with pts/dts shifted by the clip's span, so the result decodes to
    exactly ``times`` x the source frames with increasing timestamps. The source must start with a
    keyframe (every encoder's output does), so every copy starts decodable.
    """
    src, dst = str(src), Path(dst)
    tmp = dst.with_name(dst.stem + ".partial" + dst.suffix)
    with av.open(src) as probe:
        stream = probe.streams.video[0]
        packets = [(p.pts, p.dts, p.duration) for p in probe.demux(stream) if p.size]
    pts = [p for p, _, _ in packets if p is not None]
    step = next((d for _, _, d in packets if d), None) or (max(pts) - min(pts)) // max(1, len(pts) - 1)
    span = max(pts) - min(pts) + step
    with av.open(src) as template, av.open(str(tmp), "w") as out:
        out_stream = out.add_stream_from_template(template.streams.video[0])
        for copy in range(times):
            offset = copy * span
            with av.open(src) as source:
                for packet in source.demux(source.streams.video[0]):
                    if not packet.size or packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = out_stream
                    out.mux(packet)
    tmp.replace(dst)
    return dst


def looped_clip(cfg: BenchConfig, length: int) -> tuple[Path, Prompt, int]:
    """A cached clip of ``length`` frames (rounded up to whole loops of ``cfg.loop_unit``) and its prompt."""
    cache = Path(cfg.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = f"loop_{cfg.mem_width}x{cfg.mem_height}_u{cfg.loop_unit}_s7_o3"
    base, meta = cache / f"{key}.mp4", cache / f"{key}.json"
    if not (base.exists() and meta.exists()):
        spec = ClipSpec(seed=7, width=cfg.mem_width, height=cfg.mem_height, num_frames=cfg.loop_unit, occlusion=True,
                        instances_per_kind=3)  # 3 tracked objects, as issue #4 asks
        clip = BenchClip.of(make_clip(spec, base))
        meta.write_text(json.dumps({"box": list(clip.prompt.box)}))
    prompt = Prompt(0, "box", box=tuple(json.loads(meta.read_text())["box"]))
    times = max(1, math.ceil(length / cfg.loop_unit))
    path = cache / f"{key}_x{times}.mp4"
    if not path.exists():
        loop_video(base, path, times)
    return path, prompt, times * cfg.loop_unit


# --------------------------------------------------------------------------- timing helpers


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


def _ms(samples: Sequence[float]) -> dict[str, float]:
    return {"mean": round(1e3 * statistics.fmean(samples), 3), "p50": round(1e3 * statistics.median(samples), 3)}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
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
        return {**_ms(self.wall[name]), "cpu_mean": round(1e3 * statistics.fmean(self.cpu[name]), 3)}

    def mean(self, name: str, cpu: bool = False) -> float:
        return 1e3 * statistics.fmean((self.cpu if cpu else self.wall)[name])


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def read_frames(path: str | Path, limit: int | None = None, threads: int = 1) -> list[np.ndarray]:
    images = []
    with open_video(path, threads=threads) as video:
        for frame in video.frames():
            images.append(frame.image)
            if limit is not None and len(images) >= limit:
                break
    return images


# --------------------------------------------------------------------------- 1. decode


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


def section_decode(ctx: "Context") -> dict[str, Any]:
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


# --------------------------------------------------------------------------- 2. segmenter


def segmenter_fps(seg_ms: float, prop_ms: float, k: int) -> float:
    """Frames/s of keyframe + propagation at interval ``k``: 1000 / (seg_ms / k + prop_ms * (k - 1) / k)."""
    return 1000.0 / (seg_ms / k + prop_ms * (k - 1) / k)


def measure_segmenter(clip: BenchClip, frames: int, keyframe_every: int) -> dict[str, Any]:
    """Per-frame cost of each step of the default segmenter and propagator, one OpenCV thread.

    Every step is timed in wall time (``mean``, ``p50``) and in the calling thread's CPU time
    (``cpu_mean``); the fps figures use wall means, the ``*_cpu_*`` figures CPU means.
    """
    from operators.keyframes import colour_signature, reanchor_regions
    from operators.propagation import FlowPropagator
    from operators.segmenters import build_segmenter
    from operators.segmenters.base import segment_within

    images = read_frames(clip.path, limit=frames + 1)
    n = len(images) - 1
    segmenter = build_segmenter("default")
    propagator = FlowPropagator()
    steps = Steps()
    found = []
    with cv2_threads(1):
        for _ in range(3):
            memory = steps.time("encode_prompts", lambda: segmenter.encode_prompts(images[0], [clip.prompt]))
        before = None
        for image in images[:n]:
            instances = steps.time("segment", lambda: segmenter.segment(image, memory))
            found.append(len(instances))
            steps.time("refresh", lambda: segmenter.refresh(image, memory, instances))
            regions = reanchor_regions(before) if before is not None and len(before) else None
            # A re-anchoring keyframe (ill-posed flow) searches around the last frame's objects, no refresh.
            steps.time("reanchor", lambda: segment_within(segmenter, image, memory, regions) if regions
                       else segmenter.segment(image, memory))
            before = instances
        last = segmenter.segment(images[0], memory)
        last = last.with_track_ids(range(1, len(last) + 1))
        for index, (prev, cur) in enumerate(zip(images[:n], images[1 : n + 1]), start=1):
            flow = steps.time("flow", lambda: propagator.flow(prev, cur))
            last = steps.time("warp", lambda: propagator.warp(last, flow))
            steps.time("signature", lambda: colour_signature(cur))
            record = FrameRecord("bench", index, index / 25.0, "propagated", last)
            steps.time("record_encode", lambda: json.dumps(record.to_dict(), separators=(",", ":")))
    k = keyframe_every

    # What a stream runs per frame besides the segmenter steps: the scene-cut signature and the record encoding.
    extras = {cpu: steps.mean("signature", cpu) + steps.mean("record_encode", cpu) for cpu in (False, True)}

    def figures(cpu: bool) -> tuple[float, float, float, float]:
        # A keyframe costs segment + refresh (run_keyframe); the naive baseline only pays segment.
        seg = steps.mean("segment", cpu) + steps.mean("refresh", cpu)
        prop = steps.mean("flow", cpu) + steps.mean("warp", cpu)
        return seg, steps.mean("segment", cpu), prop, prop + seg / k + extras[cpu]

    seg, segment_only, prop, operator_ms = figures(cpu=False)
    seg_cpu, _, prop_cpu, operator_cpu = figures(cpu=True)
    return {
        "frames_timed": n,
        "size": f"{images[0].shape[1]}x{images[0].shape[0]}",
        "instances_mean": round(statistics.fmean(found), 2),
        **{f"{name}_ms": steps.ms(name) for name in ("encode_prompts", "segment", "refresh", "reanchor", "flow", "warp",
                                                      "signature", "record_encode")},
        "keyframe_step_ms": round(seg, 3),
        "reanchor_step_ms": round(steps.mean("reanchor"), 3),
        "propagation_step_ms": round(prop, 3),
        "stream_extras_ms": round(extras[False], 3),
        "keyframe_step_cpu_ms": round(seg_cpu, 3),
        "reanchor_step_cpu_ms": round(steps.mean("reanchor", cpu=True), 3),
        "propagation_step_cpu_ms": round(prop_cpu, 3),
        "stream_extras_cpu_ms": round(extras[True], 3),
        "keyframe_every": k,
        "segmenter_fps": round(segmenter_fps(seg, prop, k), 1),
        "segmenter_fps_by_k": {str(kk): round(segmenter_fps(seg, prop, kk), 1) for kk in (1, 2, 5, 10, 20)},
        "segment_every_frame_fps": round(1000.0 / segment_only, 1),
        "operator_ms_per_frame": round(operator_ms, 3),
        "operator_fps": round(1000.0 / operator_ms, 1),
        "segmenter_cpu_ms_per_frame": round(1000.0 / segmenter_fps(seg_cpu, prop_cpu, k), 3),
        "operator_cpu_ms_per_frame": round(operator_cpu, 3),
    }


def section_segmenter(ctx: "Context") -> dict[str, Any]:
    return measure_segmenter(ctx.clips()[0], ctx.cfg.micro_frames, ctx.cfg.keyframe_every)


# --------------------------------------------------------------------------- stream breakdown


@contextlib.contextmanager
def _timers(targets: dict[str, tuple[Any, str]], totals: dict[str, float]) -> Iterator[None]:
    """Each ``owner.attribute`` callable wrapped so its seconds add up in ``totals[name]``; restored after."""
    saved = []
    for name, (owner, attribute) in targets.items():
        raw = inspect.getattr_static(owner, attribute)
        function = raw.__func__ if isinstance(raw, staticmethod) else raw

        def timed(*args: Any, _function: Callable = function, _name: str = name, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                totals[_name] += time.perf_counter() - started

        saved.append((owner, attribute, raw))
        setattr(owner, attribute, staticmethod(timed) if isinstance(raw, staticmethod) else timed)
    try:
        yield
    finally:
        for owner, attribute, raw in saved:
            setattr(owner, attribute, raw)


def stream_breakdown(clips: Sequence[BenchClip], keyframe_every: int) -> dict[str, Any]:
    """ms per frame of each step of one stream, all on one thread (see the module docstring)."""
    import operators.stream as stream
    from operators.association import TrackAssigner
    from operators.keyframes import KeyframeConfig, KeyframePolicy
    from operators.propagation import FlowPropagator
    from operators.segmenters import build_segmenter

    totals: dict[str, float] = {name: 0.0 for name in (
        "decode", "scene_cut_signature", "flow", "segment_refresh", "finish_keyframe", "association",
        "finish_propagated", "warp", "flow_support", "record_encoding")}
    targets = {
        "scene_cut_signature": (KeyframePolicy, "observe_frame"), "flow": (FlowPropagator, "flow"),
        "segment_refresh": (stream, "run_keyframes"), "finish_keyframe": (stream.StreamProcessor, "finish_keyframe"),
        "association": (TrackAssigner, "assign_keyframe"), "finish_propagated": (stream.StreamProcessor, "finish_other"),
        "warp": (FlowPropagator, "warp"), "flow_support": (FlowPropagator, "flow_support"),
    }
    frames = keyframes = 0
    seconds = 0.0

    def emit(record: FrameRecord) -> None:
        started = time.perf_counter()
        json.dumps(record.to_dict())
        totals["record_encoding"] += time.perf_counter() - started

    with cv2_threads(1), _timers(targets, totals):
        for clip in clips:
            with open_video(clip.path, threads=1) as video:  # as each of several streams decodes
                decoded = video.frames()

                def timed_frames() -> Iterator[Any]:
                    while True:
                        started = time.perf_counter()
                        frame = next(decoded, None)
                        totals["decode"] += time.perf_counter() - started
                        if frame is None:
                            return
                        yield frame

                processor = stream.StreamProcessor(clip.path.stem, str(clip.path), [clip.prompt],
                                                   keyframes=KeyframeConfig(every=keyframe_every))
                started = time.perf_counter()
                stream.run_stream(timed_frames(), processor, stream.local_submit(build_segmenter("default")), emit)
                seconds += time.perf_counter() - started
            frames += processor.stats.frames
            keyframes += processor.stats.keyframes
    ms = {name: 1e3 * total / frames for name, total in totals.items()}
    # Flow runs on every frame before its kind is known; the capacity counts it on propagated frames only.
    keyframe_flow = ms["flow"] * keyframes / frames
    uncounted = (keyframe_flow + ms["finish_keyframe"] + ms["scene_cut_signature"] + ms["record_encoding"]
                 + ms["finish_propagated"] - ms["warp"] * (1 - keyframes / frames))
    total = 1e3 * seconds / frames
    return {
        "frames": frames, "keyframes": keyframes, "total_ms": round(total, 3),
        "steps_ms": {name: round(value, 3) for name, value in ms.items()},
        "keyframe_flow_ms": round(keyframe_flow, 3),
        "rest_ms": round(total - sum(ms[n] for n in ("decode", "scene_cut_signature", "flow", "segment_refresh",
                                                      "finish_keyframe", "finish_propagated", "record_encoding")), 3),
        "uncounted_ms": round(uncounted, 3),
        # What the capacity formula leaves out sets the best efficiency one stream on one thread can reach.
        "single_thread_ceiling": round((total - uncounted) / total, 3),
    }


def efficiency_factors(breakdown: dict[str, Any], run: dict[str, Any]) -> dict[str, float]:
    """A pipeline run's wall efficiency as the product of three measured factors.

    - what one thread reaches when the capacity leaves out steps every stream runs (the breakdown's ceiling);
    - the run's streams in parallel against that one thread (steady efficiency / ceiling): contention
      between processes on shared cores, the sink thread, Ray;
    - wall against steady: the stream workers' start-up and the tail where fewer videos than cores are left.
    """
    ceiling = breakdown["single_thread_ceiling"]
    return {
        "single_thread_ceiling": ceiling,
        "parallel_vs_one_thread": round(run["efficiency_steady"] / ceiling, 3),
        "wall_vs_steady": round(run["efficiency"] / run["efficiency_steady"], 3),
        "efficiency": run["efficiency"],
    }


def section_breakdown(ctx: "Context") -> dict[str, Any]:
    result = stream_breakdown(ctx.clips(), ctx.cfg.keyframe_every)
    # The breakdown ran the same clips as the pipeline's run of every stream: explain that run's efficiency.
    run = ctx.pipeline_runs.get(str(len(ctx.clips())))
    if run is not None:
        result["efficiency_factors"] = efficiency_factors(result, run)
    return result


# --------------------------------------------------------------------------- X-SAM (delegated)

_XSAM_ENTRY_POINTS = ("bench_tiny", "run", "run_bench", "run_benchmark", "bench", "benchmark", "measure")


def section_xsam(ctx: "Context") -> dict[str, Any]:
    """Call ``bench.xsam_bench`` if it exposes a function returning a dict; else say why not.

    Functions are tried in ``_XSAM_ENTRY_POINTS`` order; one is called only if every required
    parameter is one the harness knows how to fill (``repeats``, ``device`` = CPU, ``quick``).
    Only X-SAM tiny runs here (full vs cached path); the full-size architecture stays in
    ``python -m bench.xsam_bench``.
    """
    if importlib.util.find_spec("bench.xsam_bench") is None:
        return {"skipped": "bench/xsam_bench.py is not present"}
    try:
        module = importlib.import_module("bench.xsam_bench")
        import torch
    except Exception as exc:  # noqa: BLE001
        return {"skipped": f"bench.xsam_bench does not import: {type(exc).__name__}: {exc}"}
    known = {"repeats": 3 if ctx.cfg.quick else 5, "device": torch.device("cpu"), "quick": ctx.cfg.quick}
    for name in _XSAM_ENTRY_POINTS:
        fn = getattr(module, name, None)
        if not callable(fn):
            continue
        params = inspect.signature(fn).parameters
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        required = [p for p in params.values() if p.default is p.empty and p.kind in kinds]
        if any(p.name not in known for p in required) or any(p.kind == p.POSITIONAL_ONLY for p in params.values()):
            continue
        value = fn(**{k: v for k, v in known.items() if k in params})
        if isinstance(value, dict):
            return {"entry_point": f"bench.xsam_bench.{name}", "torch_threads": torch.get_num_threads(), **value}
        return {"skipped": f"bench.xsam_bench.{name}() returned {type(value).__name__}, not a dict"}
    return {"skipped": f"bench.xsam_bench exposes none of {', '.join(_XSAM_ENTRY_POINTS)} with parameters the harness can fill"}


# --------------------------------------------------------------------------- Ray helpers


def ensure_ray() -> None:
    """Start (or join) Ray once, on loopback, before anything is timed."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline.runtime import init_ray

    init_ray(None)


def run_pipeline(
    clips: Sequence[tuple[Path, Prompt]], out_dir: Path, keyframe_every: int, parallel: int | None
) -> tuple[float, dict[str, Any]]:
    """One timed ``run_job`` (archive mode, jsonl sink); returns wall seconds and the summary dict."""
    from pipeline.config import JobConfig
    from pipeline.job import run_job

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    prompts_file = out_dir.parent / f"{out_dir.name}-prompts.json"
    prompts_file.write_text(json.dumps({Path(p).name: [{"type": "box", "box": list(prompt.box)}] for p, prompt in clips}))
    config = JobConfig(
        sources=[str(p) for p, _ in clips], out_dir=out_dir, prompts_file=prompts_file, sinks=["jsonl"],
        progress=False, resume=False, keyframe_every=keyframe_every, parallel=parallel,
    )
    seconds, summary = _timed(lambda: run_job(config))
    result = summary.to_dict()
    failed = result["failures"]
    if failed:
        raise RuntimeError(f"pipeline run failed: {failed}")
    return seconds, result


def read_records(out_dir: Path, stream_id: str) -> list[Instances]:
    lines = (out_dir / stream_id / "frames.jsonl").read_text().splitlines()
    return [FrameRecord.from_dict(json.loads(line)).instances for line in lines]


def jf(pred: Sequence[Instances], clip: BenchClip, matching: str) -> float:
    from operators.metrics import evaluate_clip

    return round(evaluate_clip(pred, clip.truth(), matching=matching).jf_mean, 4)


# --------------------------------------------------------------------------- 3. pipeline end to end


def _job_workers(videos: int) -> int:
    """Stream workers ``run_job`` starts for ``videos`` when ``parallel`` is unset: one per CPU of the cluster."""
    import ray

    return min(videos, max(1, int(ray.cluster_resources().get("CPU", 1))))


def _e2e_figures(wall: float, summary: dict[str, Any], workers: int) -> dict[str, Any]:
    """``workers`` stream workers ran the videos; with fewer workers than videos each runs its share back to back."""
    frames = summary["frames"]
    seconds = [v["seconds"] for v in summary["videos"]]
    longest = max(seconds) if workers >= len(seconds) else sum(seconds) / workers
    keyframes = sum(v["keyframes"] for v in summary["videos"])
    reasons: dict[str, int] = {}
    for v in summary["videos"]:
        for reason, count in v["keyframe_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return {
        "streams": len(summary["videos"]),
        "stream_workers": workers,
        "frames": frames,
        "wall_s": round(wall, 3),
        "fps": round(frames / wall, 1),
        "steady_s": round(longest, 3),
        "steady_fps": round(frames / longest, 1),
        "startup_overhead_s": round(wall - longest, 3),
        "per_stream_fps": [round(v["fps"], 1) for v in summary["videos"]],
        "keyframes": keyframes,
        "keyframe_reasons": reasons,
        "effective_k": round(frames / max(1, keyframes), 2),
    }


_STEP_COSTS = ("keyframe_step", "reanchor_step", "propagation_step", "stream_extras")


def _capacity_probe(clips: Sequence[BenchClip], cfg: BenchConfig) -> dict[str, Any]:
    """Decode (one thread) and, per clip, the segmenter's step costs (wall and CPU ms), measured now.

    Each clip is timed on its own frames: the clips differ in object count and motion, so one clip's
    cost is not the others'.
    """
    decode = measure_decode([c.path for c in clips], threads=1)
    frames = max(20, cfg.micro_frames // len(clips))
    steps = {}
    for clip in clips:
        seg = measure_segmenter(clip, frames, cfg.keyframe_every)
        steps[clip.path.stem] = {f"{name}{unit}": seg[f"{name}{unit}"] for name in _STEP_COSTS
                                 for unit in ("_ms", "_cpu_ms")}
    return {"decode_ms": 1000.0 / decode["fps"], "decode_cpu_ms": decode["cpu_ms_per_frame"], "clips": steps}


def _mean_probes(probes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The probes before and after a run, averaged figure by figure."""
    clips = {stem: {k: statistics.fmean(p["clips"][stem][k] for p in probes) for k in probes[0]["clips"][stem]}
             for stem in probes[0]["clips"]}
    return {**{k: statistics.fmean(p[k] for p in probes) for k in ("decode_ms", "decode_cpu_ms")}, "clips": clips}


def segmenter_ms_per_frame(cost: dict[str, Any], videos: Sequence[dict[str, Any]], k: int | None,
                           unit: str = "_ms", operator: bool = False) -> float:
    """The segmenter's ms per frame for the videos a run processed, each at its own clip's step costs.

    ``k=None`` counts the keyframes the run really made (its policy adds keyframes where propagation
    is unreliable), the re-anchoring ones (``ill_posed_flow``) at their own cost; an int uses the fixed
    interval ``k``. ``operator=True`` adds what a stream runs besides: flow and warp on keyframes too,
    the scene-cut signature and the record encoding.
    """
    total = frames = 0.0
    for video in videos:
        step = cost["clips"][video["stream_id"]]
        n = video["frames"]
        keyframes = video["keyframes"] if k is None else n / k
        reanchors = video["keyframe_reasons"].get("ill_posed_flow", 0) if k is None else 0
        keyframe_ms = (keyframes - reanchors) * step[f"keyframe_step{unit}"] + reanchors * step[f"reanchor_step{unit}"]
        prop = step[f"propagation_step{unit}"]
        if operator:
            total += keyframe_ms + n * (prop + step[f"stream_extras{unit}"])
        else:
            total += keyframe_ms + (n - keyframes) * prop
        frames += n
    return total / frames


def section_pipeline(ctx: "Context") -> dict[str, Any]:
    """1 stream and N streams end to end; capacity probed right before and right after each run."""
    cfg = ctx.cfg
    clips = ctx.clips()
    log("pipeline: starting Ray" + (" and a warm-up job (not timed)" if cfg.warmup else ""))
    ensure_ray()
    import ray

    if cfg.warmup:
        warm = ctx.warmup_clip()
        run_pipeline([(warm.path, warm.prompt)], ctx.work / "warmup", cfg.keyframe_every, parallel=1)
    n = len(clips)
    result: dict[str, Any] = {
        "cores": cores(),
        "ray_cpus": ray.cluster_resources().get("CPU"),
        "keyframe_every": cfg.keyframe_every,
        "load_before": _load(),
    }
    try:
        import psutil  # noqa: F401

        with_sampler = True
    except ImportError:
        with_sampler = False
        result["cpu_accounting"] = "skipped: psutil is not installed"
    wait_for_actors_to_exit()
    probes = [_capacity_probe(clips, cfg)]
    for label, subset in {"1": [clips[0]], str(n): clips}.items():
        log(f"pipeline: {label} stream(s), {sum(c.frames for c in subset)} frames")
        out = ctx.work / f"pipeline-{label}"
        sampler = ClusterSampler(cfg.sample_s, store_interval=None) if with_sampler else None
        if sampler:
            sampler.start()
        try:
            # The job's own concurrency (``--parallel`` unset: one stream worker per core), as a user runs it.
            wall, summary = run_pipeline([(c.path, c.prompt) for c in subset], out, cfg.keyframe_every, parallel=None)
        finally:
            if sampler:
                sampler.stop()
        wait_for_actors_to_exit()  # tear-down is not part of the probe after the run
        probes.append(_capacity_probe(clips, cfg))
        cost = _mean_probes(probes[-2:])  # before and after this run
        figures = _e2e_figures(wall, summary, _job_workers(len(subset)))
        videos, k = summary["videos"], cfg.keyframe_every
        parallel_cores = min(len(subset), cores())

        def capacity(segmenter_ms: float) -> float:
            if len(subset) == 1:
                return 1000.0 / max(cost["decode_ms"], segmenter_ms)
            return parallel_cores * 1000.0 / (cost["decode_ms"] + segmenter_ms)

        # Headline: the segmenter doing the keyframes this run made. At K=k: the fixed interval alone.
        seg_ms, seg_ms_k = segmenter_ms_per_frame(cost, videos, None), segmenter_ms_per_frame(cost, videos, k)
        operator_ms = segmenter_ms_per_frame(cost, videos, None, operator=True)
        figures.update({
            "decode_fps": round(1000.0 / cost["decode_ms"], 1),
            "segmenter_fps": round(1000.0 / seg_ms, 1),
            f"segmenter_fps_k{k}": round(1000.0 / seg_ms_k, 1),
            "capacity_fps": round(capacity(seg_ms), 1),
            "efficiency": round(figures["fps"] / capacity(seg_ms), 3),
            "efficiency_steady": round(figures["steady_fps"] / capacity(seg_ms), 3),
            f"capacity_fps_k{k}": round(capacity(seg_ms_k), 1),
            f"efficiency_k{k}": round(figures["fps"] / capacity(seg_ms_k), 3),
            f"efficiency_steady_k{k}": round(figures["steady_fps"] / capacity(seg_ms_k), 3),
            "operator_capacity_fps": round(parallel_cores * 1000.0 / (cost["decode_ms"] + operator_ms), 1),
        })
        figures["efficiency_vs_operator_work"] = round(figures["fps"] / figures["operator_capacity_fps"], 3)
        if sampler:
            cpu = sampler.cpu_report()
            ideal = cost["decode_cpu_ms"] + segmenter_ms_per_frame(cost, videos, None, "_cpu_ms")
            figures.update(cpu)
            figures["cpu_ms_per_frame"] = round(1e3 * cpu["cpu_s"] / figures["frames"], 3)
            figures["ideal_cpu_ms_per_frame"] = round(ideal, 3)
            figures["operator_cpu_ms_per_frame"] = round(
                cost["decode_cpu_ms"] + segmenter_ms_per_frame(cost, videos, None, "_cpu_ms", operator=True), 3)
            figures["cpu_efficiency"] = round(ideal / figures["cpu_ms_per_frame"], 3)
        figures["jf_track"] = [jf(read_records(out, c.path.stem), c, "track") for c in subset]
        result[f"streams_{label}"] = figures
        ctx.pipeline_runs[label] = figures
        if not cfg.keep_outputs:
            shutil.rmtree(out, ignore_errors=True)
    result["load_after"] = _load()
    return result


# --------------------------------------------------------------------------- 5. naive baseline


def _naive_clip(clip: BenchClip) -> tuple[float, list[Instances]]:
    """Decode every frame and run ``segment`` on each, one process, default threading."""
    from operators.segmenters import build_segmenter

    segmenter = build_segmenter("default")
    found: list[Instances] = []
    started = time.perf_counter()
    with open_video(clip.path) as video:
        memory = None
        for frame in video.frames():
            if memory is None:
                memory = segmenter.encode_prompts(frame.image, [clip.prompt])
            found.append(segmenter.segment(frame.image, memory))
    return time.perf_counter() - started, found


def _with_track_ids(frames: Sequence[Instances]) -> list[Instances]:
    """The naive run's ids from the project's association, each frame matched to the previous one."""
    from operators.association import TrackAssigner

    assigner = TrackAssigner()
    previous: Instances | None = None
    tracked = []
    for index, detections in enumerate(frames):
        reference = previous if previous is not None else Instances.empty(*detections.shape)
        previous = assigner.assign_keyframe(detections, reference, index)
        tracked.append(previous)
    return tracked


def _ours_local(clip: BenchClip, keyframe_every: int) -> tuple[float, list[Instances]]:
    """Our operators in one process, no Ray (``run_stream`` + ``local_submit``), default threading."""
    from operators.keyframes import KeyframeConfig
    from operators.segmenters import build_segmenter
    from operators.stream import StreamProcessor, local_submit, run_stream

    records: list[FrameRecord] = []
    started = time.perf_counter()
    with open_video(clip.path) as video:
        processor = StreamProcessor("local", str(clip.path), [clip.prompt], keyframes=KeyframeConfig(every=keyframe_every))
        run_stream(video.frames(), processor, local_submit(build_segmenter("default")), records.append)
    return time.perf_counter() - started, [r.instances for r in records]


def section_naive(ctx: "Context") -> dict[str, Any]:
    cfg = ctx.cfg
    clips = ctx.clips()
    frames = sum(c.frames for c in clips)
    naive_s, ours_local_s = 0.0, 0.0
    naive_frame, naive_track, local_track = [], [], []
    for clip in clips:
        log(f"naive: {clip.path.name}")
        seconds, found = _naive_clip(clip)
        naive_s += seconds
        naive_frame.append(jf(found, clip, "frame"))
        naive_track.append(jf(_with_track_ids(found), clip, "track"))
        del found
        seconds, ours = _ours_local(clip, cfg.keyframe_every)
        ours_local_s += seconds
        local_track.append(jf(ours, clip, "track"))
        del ours
    naive_fps = frames / naive_s
    result: dict[str, Any] = {
        "clips": len(clips),
        "frames": frames,
        "keyframe_every": cfg.keyframe_every,
        "naive_fps": round(naive_fps, 1),
        "naive_jf_frame": naive_frame,
        "naive_jf_track": naive_track,
        "ours_local_fps": round(frames / ours_local_s, 1),
        "ours_local_jf_track": local_track,
        "speedup_local": round(frames / ours_local_s / naive_fps, 3),
    }
    if not ctx.pipeline_runs:
        log("naive: no pipeline figures from this run; running the pipeline on the same clips")
        ensure_ray()
        out = ctx.work / "naive-pipeline"
        wall, summary = run_pipeline([(c.path, c.prompt) for c in clips], out, cfg.keyframe_every, parallel=None)
        figures = _e2e_figures(wall, summary, _job_workers(len(clips)))
        figures["jf_track"] = [jf(read_records(out, c.path.stem), c, "track") for c in clips]
        ctx.pipeline_runs[str(len(clips))] = figures
    for label, figures in sorted(ctx.pipeline_runs.items(), key=lambda kv: int(kv[0])):
        subset = len(figures["jf_track"])
        ours_jf = statistics.fmean(figures["jf_track"])
        result[f"ours_ray_{label}_fps"] = figures["fps"]
        result[f"ours_ray_{label}_jf_track"] = figures["jf_track"]
        result[f"speedup_ray_{label}"] = round(figures["fps"] / naive_fps, 3)
        result[f"jf_delta_ray_{label}_vs_naive_frame"] = round(ours_jf - statistics.fmean(naive_frame[:subset]), 4)
        result[f"jf_delta_ray_{label}_vs_naive_track"] = round(ours_jf - statistics.fmean(naive_track[:subset]), 4)
    result["naive_jf_frame_mean"] = round(statistics.fmean(naive_frame), 4)
    result["naive_jf_track_mean"] = round(statistics.fmean(naive_track), 4)
    result["ours_local_jf_track_mean"] = round(statistics.fmean(local_track), 4)
    return result


# --------------------------------------------------------------------------- 4. memory


_SYSTEM_WORKERS = ("DashboardAgent", "RuntimeEnvAgent")


def _role(proc: Any, driver_pid: int) -> str:
    if proc.pid == driver_pid:
        return "driver"
    try:
        cmdline = proc.cmdline()
        first = cmdline[0] if cmdline else proc.name()
    except Exception:  # noqa: BLE001 - a process that just exited
        return "gone"
    if first.startswith("ray::"):
        name = re.split(r"[.\s]", first[5:], maxsplit=1)[0] or "worker"
        return "system" if name in _SYSTEM_WORKERS else f"worker:{name}"
    return "system"


#: Worker roles that are the pipeline itself (idle pooled workers and Ray's own processes are reported apart).
APP_ROLES = ("driver", "worker:StreamWorker", "worker:SegmenterWorker")


def _machine_busy_seconds() -> float | None:
    """CPU-seconds all processes of the machine have used since boot (``/proc/stat``), None if unknown."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class ClusterSampler(threading.Thread):
    """Samples this Ray cluster's processes (the driver and its descendants) while a job runs.

    Per sample: RSS per role (``driver``, ``worker:<Actor class>``, ``worker:IDLE``, ``system`` for
    raylet, GCS, dashboard and agents) and, every ``store_interval``, the plasma store's bytes in use.
    Over the run: CPU-seconds per role (each process's CPU time from its first to its last sample;
    a process's role is the last actor class it hosted) and the machine's CPU-seconds (``/proc/stat``),
    so ``others_cpu_s`` is what other users of the machine took meanwhile.
    """

    def __init__(self, interval: float = 0.2, store_interval: float | None = 0.5) -> None:
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.interval, self.store_interval = interval, store_interval
        self.driver = psutil.Process()
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.store: list[tuple[float, float, int]] = []  # (t, MiB used, objects)
        self.store_error: str | None = None
        self._procs: dict[int, Any] = {}
        self._cpu: dict[int, list[Any]] = {}  # pid -> [role, cpu at first sample, cpu at last sample]
        self._taking_baseline = False
        self._store_reader = self._make_store_reader() if store_interval else None
        self.t0 = time.perf_counter()
        self._machine0 = _machine_busy_seconds()
        self.wall_s = 0.0
        self.machine_cpu_s: float | None = None

    def _make_store_reader(self) -> Callable[[], tuple[float, int]] | None:
        try:
            import ray
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address

            state = get_state_from_address(ray.get_runtime_context().gcs_address)

            def read() -> tuple[float, int]:
                stats = get_memory_info_reply(state).store_stats
                return stats.object_store_bytes_used / 2**20, int(stats.num_local_objects)

            read()
            return read
        except Exception as exc:  # noqa: BLE001 - a private Ray API: report, do not fail
            self.store_error = f"{type(exc).__name__}: {exc}"
            return None

    def sample(self) -> dict[str, float]:
        """RSS (MiB) per role now; also updates the per-process CPU accounting."""
        roles: dict[str, float] = {}
        try:
            procs = [self.driver, *self.driver.children(recursive=True)]
        except self.psutil.Error:
            procs = [self.driver]
        for proc in procs:
            proc = self._procs.setdefault(proc.pid, proc)
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss / 2**20
                    times = proc.cpu_times()
            except self.psutil.Error:
                continue
            role = _role(proc, self.driver.pid)
            roles[role] = roles.get(role, 0.0) + rss
            cpu = times.user + times.system
            entry = self._cpu.setdefault(proc.pid, [role, cpu if self._taking_baseline else 0.0, cpu])
            if role not in ("gone", "worker:IDLE"):
                entry[0] = role
            entry[2] = cpu
        return roles

    def start(self) -> None:
        """Take the CPU baseline (processes alive now count from here, later ones from zero) and sample."""
        self._cpu, self._taking_baseline = {}, True
        self.sample()
        self._taking_baseline = False
        self.t0 = time.perf_counter()
        self._machine0 = _machine_busy_seconds()
        super().start()

    def run(self) -> None:
        next_store = 0.0
        while not self.stop_event.is_set():
            t = time.perf_counter() - self.t0
            self.samples.append((t, self.sample()))
            if self._store_reader is not None and t >= next_store:
                with contextlib.suppress(Exception):
                    used, objects = self._store_reader()
                    self.store.append((t, used, objects))
                next_store = t + (self.store_interval or 0)
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()
        self.samples.append((time.perf_counter() - self.t0, self.sample()))
        self.wall_s = time.perf_counter() - self.t0
        end = _machine_busy_seconds()
        self.machine_cpu_s = None if end is None or self._machine0 is None else end - self._machine0

    def cpu_by_role(self) -> dict[str, float]:
        roles: dict[str, float] = {}
        for role, first, last in self._cpu.values():
            roles[role] = roles.get(role, 0.0) + max(0.0, last - first)
        return roles

    def cpu_report(self) -> dict[str, Any]:
        roles = self.cpu_by_role()
        ours = sum(roles.values())
        report: dict[str, Any] = {
            "cpu_s": round(ours, 2),
            "cpu_s_by_role": {k: round(v, 2) for k, v in sorted(roles.items())},
            "our_cpu_cores": round(ours / self.wall_s, 2) if self.wall_s else None,
        }
        if self.machine_cpu_s is not None and self.wall_s:
            report["others_cpu_cores"] = round(max(0.0, self.machine_cpu_s - ours) / self.wall_s, 2)
        return report

    @staticmethod
    def app_total(roles: dict[str, float]) -> float:
        return sum(v for k, v in roles.items() if k in APP_ROLES)


def wait_for_actors_to_exit(timeout: float = 15.0) -> float:
    """Block until the previous job's pipeline actors have exited (so runs do not overlap); seconds waited."""
    started = time.perf_counter()
    try:
        import psutil
    except ImportError:
        time.sleep(1.0)
        return time.perf_counter() - started
    driver = psutil.Process()
    while time.perf_counter() - started < timeout:
        try:
            roles = {_role(p, driver.pid) for p in driver.children(recursive=True)}
        except psutil.Error:
            roles = set()
        if not roles & set(APP_ROLES):
            break
        time.sleep(0.1)
    return round(time.perf_counter() - started, 2)


def _slope_mb_per_min(points: Sequence[tuple[float, float]], min_span_s: float = 20.0) -> float | None:
    """Least-squares slope of RSS between 25 % and 90 % of a run (start-up and shut-down cut), MB per minute.

    None for runs too short for a slope to mean anything.
    """
    if not points or points[-1][0] < min_span_s:
        return None
    end = points[-1][0]
    middle = [(t, v) for t, v in points if 0.25 * end <= t <= 0.9 * end]
    if len(middle) < 8:
        return None
    t = np.array([p[0] for p in middle])
    y = np.array([p[1] for p in middle])
    return round(float(np.polyfit(t, y, 1)[0]) * 60, 2)


def section_memory(ctx: "Context") -> dict[str, Any]:
    cfg = ctx.cfg
    try:
        import psutil  # noqa: F401
    except ImportError:
        return {"skipped": "psutil is not installed (pip install psutil)"}
    ensure_ray()
    runs = []
    for length in cfg.mem_lengths:
        path, prompt, frames = looped_clip(cfg, length)
        log(f"memory: {frames} frames at {cfg.mem_width}x{cfg.mem_height}")
        gc.collect()
        wait_for_actors_to_exit()
        sampler = ClusterSampler(cfg.sample_s, cfg.store_sample_s)
        baseline_roles = sampler.sample()
        sampler.start()
        try:
            wall, summary = run_pipeline([(path, prompt)], ctx.work / f"memory-{frames}", cfg.keyframe_every, parallel=1)
        finally:
            sampler.stop()
        totals = [(t, ClusterSampler.app_total(roles)) for t, roles in sampler.samples]
        everything = [sum(v for k, v in roles.items() if k != "gone") for _, roles in sampler.samples]
        peak_roles: dict[str, float] = {}
        for _, roles in sampler.samples:
            for role, rss in roles.items():
                peak_roles[role] = max(peak_roles.get(role, 0.0), rss)
        run = {
            "frames": summary["frames"],
            "fps": round(summary["frames"] / wall, 1),
            "wall_s": round(wall, 2),
            "samples": len(totals),
            "baseline_rss_mb": round(ClusterSampler.app_total(baseline_roles), 1),
            "peak_rss_mb": round(max(v for _, v in totals), 1),
            "peak_rss_all_mb": round(max(everything), 1),
            "final_rss_mb": round(totals[-1][1], 1),
            "rss_slope_mb_per_min": _slope_mb_per_min(totals),
            "peak_rss_by_role_mb": {k: round(v, 1) for k, v in sorted(peak_roles.items()) if k != "gone"},
            "peak_object_store_mb": round(max(u for _, u, _ in sampler.store), 2) if sampler.store else None,
            "peak_object_store_objects": max((o for _, _, o in sampler.store), default=-1),
        }
        run.update(sampler.cpu_report())
        if sampler.store_error:
            run["object_store_error"] = sampler.store_error
        runs.append(run)
        if not cfg.keep_outputs:
            shutil.rmtree(ctx.work / f"memory-{frames}", ignore_errors=True)
    shortest, longest = runs[0], runs[-1]
    roles = sorted(set(shortest["peak_rss_by_role_mb"]) | set(longest["peak_rss_by_role_mb"]))
    return {
        "size": f"{cfg.mem_width}x{cfg.mem_height}",
        "loop_unit": cfg.loop_unit,
        "peak_rss_roles": list(APP_ROLES),
        "runs": runs,
        "peak_rss_diff_mb": round(longest["peak_rss_mb"] - shortest["peak_rss_mb"], 1),
        "peak_rss_all_diff_mb": round(longest["peak_rss_all_mb"] - shortest["peak_rss_all_mb"], 1),
        "peak_rss_diff_by_role_mb": {
            r: round(longest["peak_rss_by_role_mb"].get(r, 0.0) - shortest["peak_rss_by_role_mb"].get(r, 0.0), 1) for r in roles
        },
        "peak_object_store_diff_mb": (
            round(longest["peak_object_store_mb"] - shortest["peak_object_store_mb"], 2)
            if longest["peak_object_store_mb"] is not None and shortest["peak_object_store_mb"] is not None else None
        ),
        "diff_between_frames": [shortest["frames"], longest["frames"]],
    }


# --------------------------------------------------------------------------- driver


class Context:
    """What sections share within one run: the config, the clips and the pipeline's figures."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self._tmp = None if cfg.work_dir else tempfile.TemporaryDirectory(prefix="xsam-bench-")
        self.work = Path(cfg.work_dir or self._tmp.name)
        self.work.mkdir(parents=True, exist_ok=True)
        self._clips: list[BenchClip] | None = None
        self._warmup: BenchClip | None = None
        self.pipeline_runs: dict[str, dict[str, Any]] = {}

    def clips(self) -> list[BenchClip]:
        if self._clips is None:
            log(f"rendering {self.cfg.streams} clips of {self.cfg.frames} frames at {self.cfg.width}x{self.cfg.height}")
            self._clips = make_bench_clips(self.cfg.clip_specs(), self.work / "clips")
        return self._clips

    def warmup_clip(self) -> BenchClip:
        if self._warmup is None:
            spec = ClipSpec(seed=99, width=self.cfg.width, height=self.cfg.height, num_frames=20)
            self._warmup = make_bench_clips([spec], self.work / "warmup-clip")[0]
        return self._warmup

    def close(self) -> None:
        if self._tmp is not None and not self.cfg.keep_outputs:
            self._tmp.cleanup()


RUNNERS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "decode": section_decode,
    "segmenter": section_segmenter,
    "breakdown": section_breakdown,
    "xsam": section_xsam,
    "pipeline": section_pipeline,
    "naive": section_naive,
    "memory": section_memory,
}


def run(cfg: BenchConfig, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections (all by default) in the canonical order; returns the JSON-ready result."""
    default = QUICK_SECTIONS if cfg.quick else SECTIONS
    chosen = [s for s in SECTIONS if (s in only if only else s in default)]
    unknown = sorted(set(only or ()) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine_info(), "config": asdict(cfg), "sections": {}}
    ctx = Context(cfg)
    try:
        for name in chosen:
            log(f"section {name} (load {_load()})")
            t0 = time.perf_counter()
            section = RUNNERS[name](ctx)
            section["section_s"] = round(time.perf_counter() - t0, 2)
            result["sections"][name] = section
    finally:
        ctx.close()
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                ray.shutdown()
    result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result


# --------------------------------------------------------------------------- reporting


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def summary_rows(result: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """The headline figures of each section that ran, as (metric, value) rows."""
    rows: dict[str, list[tuple[str, str]]] = {}
    s = result["sections"]
    if "decode" in s:
        d = s["decode"]
        rows["decode"] = [
            (f"PyAV decode, 1 thread, {d['size']} (fps)", _fmt(d["threads_1"]["fps"])),
            ("PyAV decode, auto threads (fps)", _fmt(d["threads_auto"]["fps"])),
        ]
        k = d.get("keyframes_only", {})
        if "fps" in k:
            rows["decode"].append(("keyframes-only decode: keyframes/s (source frames covered/s)", f"{k['fps']} ({k['covered_fps']})"))
    if "segmenter" in s:
        g = s["segmenter"]
        k = g["keyframe_every"]
        rows["segmenter"] = [
            (f"encode_prompts once, {g['size']} (ms)", _fmt(g["encode_prompts_ms"]["mean"])),
            ("keyframe step: segment + refresh (ms/frame)", f"{_fmt(g['keyframe_step_ms'])} ({_fmt(g['segment_ms']['mean'])} + {_fmt(g['refresh_ms']['mean'])})"),
            ("re-anchoring keyframe (ill-posed flow): segment around the objects (ms/frame)", _fmt(g["reanchor_step_ms"])),
            ("propagation step: flow + warp (ms/frame)", f"{_fmt(g['propagation_step_ms'])} ({_fmt(g['flow_ms']['mean'])} + {_fmt(g['warp_ms']['mean'])})"),
            (f"segmenter fps at K={k}", _fmt(g["segmenter_fps"])),
            ("segmenter fps at K=1 (segment every frame)", _fmt(g["segment_every_frame_fps"])),
            (f"operator fps at K={k} (all per-frame work in the stream, no decode)", _fmt(g["operator_fps"])),
        ]
    if "breakdown" in s:
        b = s["breakdown"]
        steps = b["steps_ms"]
        rows["breakdown"] = [
            (f"one stream on one thread, all steps ({b['frames']} frames, {b['keyframes']} keyframes), ms/frame",
             _fmt(b["total_ms"])),
            ("decode (counted)", _fmt(steps["decode"])),
            ("segment + refresh on keyframes (counted)", _fmt(steps["segment_refresh"])),
            ("flow on every frame (counted on propagated frames; on keyframes)", f"{_fmt(steps['flow'])} ({_fmt(b['keyframe_flow_ms'])})"),
            ("propagated frames: warp (counted), flow support, record", f"{_fmt(steps['finish_propagated'])} "
             f"(flow support {_fmt(steps['flow_support'])})"),
            ("keyframes: warp to the keyframe, association, record", f"{_fmt(steps['finish_keyframe'])} "
             f"(association {_fmt(steps['association'])})"),
            ("scene-cut signature", _fmt(steps["scene_cut_signature"])),
            ("record encoding, RLE + JSON (the sink's work)", _fmt(steps["record_encoding"])),
            ("the rest (loop, policy, prompts)", _fmt(b["rest_ms"])),
            ("**not counted by the capacity** (ms/frame)", _fmt(b["uncounted_ms"])),
            ("best efficiency of one stream on one thread (counted / all)", f"{b['single_thread_ceiling']:.3f}"),
        ]
        if "efficiency_factors" in b:
            e = b["efficiency_factors"]
            rows["breakdown"].append((
                "all streams' wall efficiency = one-thread ceiling x streams in parallel vs one thread x wall vs steady",
                f"{e['efficiency']:.3f} = {e['single_thread_ceiling']:.3f} x {e['parallel_vs_one_thread']:.3f} x "
                f"{e['wall_vs_steady']:.3f}"))
    if "xsam" in s:
        x = s["xsam"]
        rows["xsam"] = [("X-SAM", x["skipped"])] if "skipped" in x else [
            (k, _fmt(v)) for k, v in x.items() if isinstance(v, (int, float, str)) and k != "section_s"
        ]
    if "pipeline" in s:
        p = s["pipeline"]
        rows["pipeline"] = []
        for key in sorted((k for k in p if k.startswith("streams_")), key=lambda k: int(k.split("_")[1])):
            f = p[key]
            n = key.split("_")[1]
            k = p["keyframe_every"]
            rows["pipeline"] += [
                (f"{n} stream(s): e2e fps wall (steady)", f"{_fmt(f['fps'])} ({_fmt(f['steady_fps'])})"),
                (f"{n} stream(s): capacity fps at the run's keyframes (decode fps / segmenter fps, same run)",
                 f"{_fmt(f['capacity_fps'])} ({_fmt(f['decode_fps'])} / {_fmt(f['segmenter_fps'])})"),
                (f"{n} stream(s): **efficiency** wall (steady)", f"{f['efficiency']:.3f} ({f['efficiency_steady']:.3f})"),
                (f"{n} stream(s): capacity fps at K={k} only (segmenter fps)",
                 f"{_fmt(f[f'capacity_fps_k{k}'])} ({_fmt(f[f'segmenter_fps_k{k}'])})"),
                (f"{n} stream(s): efficiency against K={k} only, wall (steady)",
                 f"{f[f'efficiency_k{k}']:.3f} ({f[f'efficiency_steady_k{k}']:.3f})"),
                (f"{n} stream(s): actor start-up and tail overhead (s)", _fmt(f["startup_overhead_s"])),
            ]
            if "cpu_ms_per_frame" in f:
                rows["pipeline"] += [
                    (f"{n} stream(s): CPU ms/frame, all our processes (ideal decode+segmenter)",
                     f"{_fmt(f['cpu_ms_per_frame'])} ({_fmt(f['ideal_cpu_ms_per_frame'])})"),
                    (f"{n} stream(s): CPU efficiency (ideal / actual)", f"{f['cpu_efficiency']:.3f}"),
                    (f"{n} stream(s): cores used by us / by other users meanwhile",
                     f"{f['our_cpu_cores']} / {f.get('others_cpu_cores', '?')}"),
                ]
            rows["pipeline"].append((f"{n} stream(s): effective K (keyframe reasons)", f"{f['effective_k']} {f['keyframe_reasons']}"))
    if "naive" in s:
        v = s["naive"]
        rows["naive"] = [
            ("naive decode + segment every frame (fps)", _fmt(v["naive_fps"])),
            (f"ours in-process, no Ray, K={v['keyframe_every']} (fps)", _fmt(v["ours_local_fps"])),
            ("speedup in-process", f"{v['speedup_local']:.3f}"),
        ]
        for key in sorted(k for k in v if k.startswith("speedup_ray_")):
            label = key.rsplit("_", 1)[1]
            rows["naive"].append((f"speedup, Ray pipeline {label} stream(s)", f"{v[key]:.3f}"))
        rows["naive"] += [
            ("J&F naive (frame matching / track ids by TrackAssigner)", f"{v['naive_jf_frame_mean']:.4f} / {v['naive_jf_track_mean']:.4f}"),
            ("J&F ours in-process (track matching)", f"{v['ours_local_jf_track_mean']:.4f}"),
        ]
        for key in sorted(k for k in v if k.startswith("jf_delta_ray_")):
            rows["naive"].append((f"J&F delta {key[len('jf_delta_'):]}", f"{v[key]:+.4f}"))
    if "memory" in s:
        m = s["memory"]
        if "skipped" in m:
            rows["memory"] = [("memory", m["skipped"])]
        else:
            rows["memory"] = [
                (f"{r['frames']} frames at {m['size']}: peak RSS driver+pipeline actors MB (all processes; object store peak MB)",
                 f"{_fmt(r['peak_rss_mb'])} ({_fmt(r['peak_rss_all_mb'])}; {_fmt(r['peak_object_store_mb'])})")
                for r in m["runs"]
            ]
            a, b = m["diff_between_frames"]
            slope = m["runs"][-1]["rss_slope_mb_per_min"]
            rows["memory"] += [
                (f"**peak RSS {b} vs {a} frames** (MB), driver+pipeline actors (all processes)",
                 f"{m['peak_rss_diff_mb']:+.1f} ({m['peak_rss_all_diff_mb']:+.1f})"),
                (f"peak RSS {b} vs {a} frames by role (MB)", ", ".join(f"{k} {v:+.1f}" for k, v in m["peak_rss_diff_by_role_mb"].items())),
                (f"RSS slope during the {b}-frame run (MB/min, middle of the run)", "n/a (run too short)" if slope is None else f"{slope:+.2f}"),
                (f"peak object store {b} vs {a} frames (MB)",
                 "n/a" if m["peak_object_store_diff_mb"] is None else f"{m['peak_object_store_diff_mb']:+.2f}"),
            ]
    return rows


def format_table(result: dict[str, Any]) -> str:
    rows = summary_rows(result)
    width = max((len(m) for section in rows.values() for m, _ in section), default=10)
    lines = []
    for name, section in rows.items():
        lines.append(f"== {name} ({result['sections'][name].get('section_s', '?')} s)")
        lines += [f"  {metric:<{width}}  {value}" for metric, value in section]
    m = result["machine"]
    lines.append(f"-- {m['cores']} cores {m['cpu_model']}, {m['ram_gb']} GB, load {m['load_avg_start']} -> {m.get('load_avg_end')}, {result.get('elapsed_s')} s")
    return "\n".join(lines)
