"""``sweep``: the naive loop, ours in-process and ours on Ray at each frame size and object count.

Which is cheaper, a keyframe or a propagated frame, depends on the frame size and the number of objects
(issue 17): at 320x240 the default segmenter costs less than a flow step, at 1080p several times more.
Every method runs at the pipeline's default keyframe policy, so the sweep measures whatever that is.
"""

from __future__ import annotations

import shutil
from typing import Any

from bench.clips import ClipSpec
from bench.config import load, log
from bench.context import Context
from bench.jobs import e2e_figures, read_records, run_pipeline
from bench.report import fmt
from bench.sections.naive import naive_and_in_process
from bench.videos import BenchClip, jf, make_bench_clips

NAME = "sweep"
TITLE = "Resolution sweep"
#: Issue 17's bar at every size: ours in-process at least the naive loop's fps, J&F at most this much below.
JF_TOLERANCE = 0.01
DEFINITION = f"""\
- **resolution sweep**: at each size (320x240, 640x480, 1280x720, 1920x1080; quick: the first two) one
  `sweep_frames`-frame clip (30) with 1 and one with 4 objects of one kind, a box prompt on the first:
  the naive loop and ours in-process as in the naive baseline, and ours on Ray: one
  `run_job(JobConfig(..., sinks=["jsonl"], parallel=1))` of every sweep clip, one stream worker taking them
  one after another, so each clip's **Ray fps** is its frames / its `StreamWorker.run` seconds (the
  job's one actor start-up is reported apart). Ours runs at the pipeline's default keyframe policy (no
  `keyframe_every` given). **speed-up** = in-process fps / naive fps; **J&F delta** = ours in-process
  (track matching) - naive (frame matching, generous to it); a run **meets the bar** where the speed-up
  is >= 1 and the delta >= -{JF_TOLERANCE}.
"""


def _clips(ctx: Context) -> list[tuple[int, BenchClip]]:
    """(objects, clip) for every size and object count, each clip its own seed (a job's videos need distinct names)."""
    cfg, found = ctx.cfg, []
    log(f"sweep: rendering {cfg.sweep_frames} frames at {len(cfg.sweep_sizes)} sizes, {cfg.sweep_objects} objects")
    for width, height in cfg.sweep_sizes:
        for objects in cfg.sweep_objects:
            spec = ClipSpec(seed=31 + len(found), width=width, height=height, num_frames=cfg.sweep_frames,
                            instances_per_kind=objects)
            found.append((objects, make_bench_clips([spec], ctx.work / "sweep-clips")[0]))
    return found


def _in_process(clip: BenchClip, objects: int) -> dict[str, Any]:
    h, w = clip.shape
    log(f"sweep: {w}x{h}, {objects} object(s): naive and in-process")
    local = naive_and_in_process(clip, None)
    naive_fps, local_fps = clip.frames / local["naive_s"], clip.frames / local["ours_local_s"]
    speedup, jf_delta = round(local_fps / naive_fps, 3), round(local["ours_local_jf_track"] - local["naive_jf_frame"], 4)
    return {
        "size": f"{w}x{h}", "objects": objects, "frames": clip.frames,
        "naive_fps": round(naive_fps, 1), "naive_jf_frame": local["naive_jf_frame"],
        "naive_jf_track": local["naive_jf_track"],
        "ours_local_fps": round(local_fps, 1), "ours_local_jf_track": local["ours_local_jf_track"],
        "speedup_local": speedup, "jf_delta_local": jf_delta, "meets_bar": speedup >= 1 and jf_delta >= -JF_TOLERANCE,
    }


def _on_ray(ctx: Context, clips: list[tuple[int, BenchClip]]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """One job of every clip on one stream worker: the job's figures and each clip's by stream id."""
    log(f"sweep: {len(clips)} clips on Ray, one stream worker")
    out = ctx.work / "sweep-ray"
    wall, summary = run_pipeline([(c.path, c.prompt) for _, c in clips], out, None, parallel=1)
    job = e2e_figures(wall, summary, workers=1)
    videos = {v["stream_id"]: v for v in summary["videos"]}
    per_clip = {}
    for _, clip in clips:
        video = videos[clip.path.stem]
        per_clip[clip.path.stem] = {"ours_ray_fps": round(video["fps"], 1),
                                    "ours_ray_jf_track": jf(read_records(out, clip.path.stem), clip, "track"),
                                    "ours_ray_keyframes": video["keyframes"],
                                    "ours_ray_keyframe_reasons": video["keyframe_reasons"]}
    if not ctx.cfg.keep_outputs:
        shutil.rmtree(out, ignore_errors=True)
    return {k: job[k] for k in ("wall_s", "fps", "startup_overhead_s")}, per_clip


def run(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    ctx.warm_ray()
    clips = _clips(ctx)
    naive_and_in_process(clips[0][1], None)  # untimed: the driver's first run pays for imports
    result: dict[str, Any] = {"frames": cfg.sweep_frames, "load_before": load()}
    runs = [_in_process(clip, objects) for objects, clip in clips]
    result["ray_job"], per_clip = _on_ray(ctx, clips)
    for measured, (_, clip) in zip(runs, clips):
        measured.update(per_clip[clip.path.stem])
        measured["speedup_ray"] = round(measured["ours_ray_fps"] / measured["naive_fps"], 3)
    result["runs"] = runs
    result["load_after"] = load()
    result["runs_meeting_bar"] = sum(r["meets_bar"] for r in runs)
    return result


def rows(d: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for r in d["runs"]:
        where = f"{r['size']}, {r['objects']} object(s), {r['frames']} frames"
        found += [
            (f"{where}: fps naive / ours in-process (speed-up) / ours on Ray (speed-up)",
             f"{fmt(r['naive_fps'])} / {fmt(r['ours_local_fps'])} ({r['speedup_local']:.2f}x) / "
             f"{fmt(r['ours_ray_fps'])} ({r['speedup_ray']:.2f}x)"),
            (f"{where}: J&F naive / ours in-process (delta) / ours on Ray; Ray's keyframes",
             f"{r['naive_jf_frame']:.4f} / {r['ours_local_jf_track']:.4f} ({r['jf_delta_local']:+.4f}) / "
             f"{r['ours_ray_jf_track']:.4f}; {r['ours_ray_keyframes']}"),
        ]
    job = d["ray_job"]
    found.append(("Ray job of every clip: wall s (actor start-up s)", f"{fmt(job['wall_s'])} ({fmt(job['startup_overhead_s'])})"))
    found.append((f"runs meeting the bar (in-process >= naive fps, J&F within {JF_TOLERANCE})",
                  f"{d['runs_meeting_bar']} of {len(d['runs'])}"))
    return found
