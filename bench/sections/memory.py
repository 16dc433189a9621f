"""``memory``: one stream through the pipeline on videos of increasing length.

A short synthetic clip is looped losslessly by remuxing its packets with shifted timestamps. A thread
samples the RSS of the driver and every Ray worker process of this cluster (psutil) and the plasma
store's bytes in use; peaks are per run; the headline is the peak of (driver + pipeline actors) for the
longest run minus the shortest (idle pooled workers and Ray's own processes are reported apart).
"""

from __future__ import annotations

import gc
import shutil
from typing import Any

from bench.config import log
from bench.context import Context
from bench.jobs import ensure_ray, run_pipeline
from bench.report import fmt
from bench.sampler import APP_ROLES, ClusterSampler, slope_mb_per_min, wait_for_actors_to_exit
from bench.videos import looped_clip

NAME = "memory"
TITLE = "Memory vs video length"
DEFINITION = """\
- **memory vs video length**: one stream through the pipeline on a synthetic clip looped losslessly (packets
  remuxed with shifted timestamps) to each length. A thread samples (psutil) the RSS of the driver and
  every Ray worker process of this cluster, and the plasma store's bytes in use (every 0.5 s). **Peak RSS**
  = the largest sum over the run of the driver and the pipeline's actors (`StreamWorker`,
  `SegmenterWorker`); in parentheses the same with idle pooled workers and Ray's own processes (raylet,
  GCS, dashboard, agents) added. The RSS slope is a least-squares fit over 25-90 % of the longest run.
"""


def run(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
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
            "rss_slope_mb_per_min": slope_mb_per_min(totals),
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


def rows(m: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    if "skipped" in m:
        return [("memory", m["skipped"])]
    found = [
        (f"{r['frames']} frames at {m['size']}: peak RSS driver+pipeline actors MB (all processes; object store peak MB)",
         f"{fmt(r['peak_rss_mb'])} ({fmt(r['peak_rss_all_mb'])}; {fmt(r['peak_object_store_mb'])})")
        for r in m["runs"]
    ]
    a, b = m["diff_between_frames"]
    slope = m["runs"][-1]["rss_slope_mb_per_min"]
    return found + [
        (f"**peak RSS {b} vs {a} frames** (MB), driver+pipeline actors (all processes)",
         f"{m['peak_rss_diff_mb']:+.1f} ({m['peak_rss_all_diff_mb']:+.1f})"),
        (f"peak RSS {b} vs {a} frames by role (MB)", ", ".join(f"{k} {v:+.1f}" for k, v in m["peak_rss_diff_by_role_mb"].items())),
        (f"RSS slope during the {b}-frame run (MB/min, middle of the run)", "n/a (run too short)" if slope is None else f"{slope:+.2f}"),
        (f"peak object store {b} vs {a} frames (MB)",
         "n/a" if m["peak_object_store_diff_mb"] is None else f"{m['peak_object_store_diff_mb']:+.2f}"),
    ]
