"""``pipeline``: ``pipeline.job.run_job`` on Ray, archive mode, sinks=["jsonl"], 1 stream and N streams
at once (``parallel`` unset: one stream worker per core). Ray is started (and warmed with a tiny job) before the timed region; the timed
region is the ``run_job`` call, so it includes the per-job actor start-up (``wall``); ``steady``
excludes the stream actors' start-up (frames / the longest ``StreamWorker.run``). Efficiency:
1 stream: ``e2e_fps / min(decode_fps, segmenter_fps)``; N streams: ``e2e_fps / capacity_N`` with
``capacity_N = min(N, cores) / (1 / decode_fps + 1 / segmenter_fps)``: every frame costs one
decode plus the segmenter's amortised per-frame cost on one core, and the cores work in parallel.
``segmenter_fps`` is the segmenter doing the run's work: each video's step costs on its own frames,
weighted by the keyframes the run made, re-anchoring ones at their own cost (:func:`segmenter_ms_per_frame`;
the fixed interval K alone is reported beside it). ``decode_fps`` (one thread) and the step costs are measured right before and
right after each timed run and averaged. The CPU time of every process of the cluster is accounted
too (``cpu_efficiency`` = ideal CPU ms per frame / actual; robust to other users of the machine).
"""

from __future__ import annotations

import shutil
import statistics
from typing import Any, Sequence

from bench.config import BenchConfig, cores, load, log
from bench.context import Context
from bench.jobs import e2e_figures, job_workers, read_records, run_pipeline
from bench.report import fmt
from bench.sampler import ClusterSampler, wait_for_actors_to_exit
from bench.sections.decode import measure_decode
from bench.sections.segmenter import measure_segmenter
from bench.videos import BenchClip, jf

NAME = "pipeline"
TITLE = "Pipeline end to end (Ray, archive mode)"
DEFINITION = """\
- **pipeline end to end**: N videos in one `run_job(JobConfig(..., sinks=["jsonl"], progress=False))` on
  Ray, archive mode, `parallel` unset as `xsam-pipeline run` leaves it: min(N, cluster CPUs) stream workers,
  each taking the next video when one ends. Ray is started and warmed with a tiny job before timing; the
  timed region is the `run_job` call (**wall**, includes the per-job actor start-up: the segmenter pool
  unless segmentation is inline, the stream actors). **steady** = frames / the stream workers' busy time
  (the longest `StreamWorker.run`, or with fewer workers than videos the videos' total seconds / workers;
  excludes the stream actors' start-up, still includes waiting for a segmenter actor to start; the gap to
  wall is start-up plus the tail, where fewer videos than cores are left). **Capacity**:
  1 stream `min(decode_fps, segmenter_fps)`; N streams `min(N, cores) / (1/decode_fps + 1/segmenter_fps)`
  (each frame costs one decode plus the segmenter's amortised per-frame cost on one core; the cores work in
  parallel). **segmenter fps** here is the segmenter doing the same work as the run: each video's keyframe
  and propagation steps timed on that video's own frames, weighted by the keyframes the run made (its
  policy adds re-anchoring keyframes where flow is unreliable, costed at the **re-anchor step**: `segment`
  searching only around the last frame's objects, no refresh); the same at the fixed interval K alone is reported
  beside it. decode (one thread) and the step costs are measured right before and right after each timed
  run and averaged. **efficiency** = e2e fps / capacity. Contention-proof companion: **CPU efficiency** = ideal
  CPU ms per frame (decode + segmenter formula, in CPU time) / the CPU ms per frame all our processes
  (driver, workers, raylet/GCS/agents; psutil) used during the run; "other users" = the machine's busy CPU
  (`/proc/stat`) minus ours, in cores.
"""


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


def run(ctx: Context) -> dict[str, Any]:
    """1 stream and N streams end to end; capacity probed right before and right after each run."""
    cfg = ctx.cfg
    clips = ctx.clips()
    log("pipeline: starting Ray")
    ctx.warm_ray()
    import ray

    n = len(clips)
    result: dict[str, Any] = {
        "cores": cores(),
        "ray_cpus": ray.cluster_resources().get("CPU"),
        "keyframe_every": cfg.keyframe_every,
        "load_before": load(),
    }
    wait_for_actors_to_exit()
    probes = [_capacity_probe(clips, cfg)]
    for label, subset in {"1": [clips[0]], str(n): clips}.items():
        log(f"pipeline: {label} stream(s), {sum(c.frames for c in subset)} frames")
        out = ctx.work / f"pipeline-{label}"
        sampler = ClusterSampler(cfg.sample_s, store_interval=None)
        sampler.start()
        try:
            # The job's own concurrency (``--parallel`` unset: one stream worker per core), as a user runs it.
            wall, summary = run_pipeline([(c.path, c.prompt) for c in subset], out, cfg.keyframe_every, parallel=None)
        finally:
            sampler.stop()
        wait_for_actors_to_exit()  # tear-down is not part of the probe after the run
        probes.append(_capacity_probe(clips, cfg))
        cost = _mean_probes(probes[-2:])  # before and after this run
        figures = e2e_figures(wall, summary, job_workers(len(subset)))
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
    result["load_after"] = load()
    return result



def rows(p: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for key in sorted((k for k in p if k.startswith("streams_")), key=lambda k: int(k.split("_")[1])):
        f = p[key]
        n = key.split("_")[1]
        k = p["keyframe_every"]
        found += [
            (f"{n} stream(s): e2e fps wall (steady)", f"{fmt(f['fps'])} ({fmt(f['steady_fps'])})"),
            (f"{n} stream(s): capacity fps at the run's keyframes (decode fps / segmenter fps, same run)",
             f"{fmt(f['capacity_fps'])} ({fmt(f['decode_fps'])} / {fmt(f['segmenter_fps'])})"),
            (f"{n} stream(s): **efficiency** wall (steady)", f"{f['efficiency']:.3f} ({f['efficiency_steady']:.3f})"),
            (f"{n} stream(s): capacity fps at K={k} only (segmenter fps)",
             f"{fmt(f[f'capacity_fps_k{k}'])} ({fmt(f[f'segmenter_fps_k{k}'])})"),
            (f"{n} stream(s): efficiency against K={k} only, wall (steady)",
             f"{f[f'efficiency_k{k}']:.3f} ({f[f'efficiency_steady_k{k}']:.3f})"),
            (f"{n} stream(s): actor start-up and tail overhead (s)", fmt(f["startup_overhead_s"])),
        ]
        if "cpu_ms_per_frame" in f:
            found += [
                (f"{n} stream(s): CPU ms/frame, all our processes (ideal decode+segmenter)",
                 f"{fmt(f['cpu_ms_per_frame'])} ({fmt(f['ideal_cpu_ms_per_frame'])})"),
                (f"{n} stream(s): CPU efficiency (ideal / actual)", f"{f['cpu_efficiency']:.3f}"),
                (f"{n} stream(s): cores used by us / by other users meanwhile",
                 f"{f['our_cpu_cores']} / {f.get('others_cpu_cores', '?')}"),
            ]
        found.append((f"{n} stream(s): effective K (keyframe reasons)", f"{f['effective_k']} {f['keyframe_reasons']}"))
    return found
