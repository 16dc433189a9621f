"""``naive``: what a user would write instead of the pipeline.

Decode every frame with PyAV and run the default segmenter's full keyframe path (``segment``) on every
frame, one process, no Ray, library threading left at its defaults. Speedup = our end-to-end fps / naive
fps on the same clips (K from the config). J&F on the clips' ground truth: ours with
``matching="track"``; the naive run with ``matching="frame"`` (per-frame Hungarian, generous to it) and
with track ids from the project's ``TrackAssigner`` on consecutive frames (``matching="track"``, like
for like).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Sequence

from bench.config import log
from bench.context import Context
from bench.jobs import e2e_figures, ensure_ray, job_workers, read_records, run_pipeline
from bench.report import fmt
from bench.videos import BenchClip, jf
from operators.records import FrameRecord, Instances
from pipeline.sources import open_video

NAME = "naive"
TITLE = "Naive baseline"
DEFINITION = """\
- **naive baseline**: one process, no Ray: decode every frame with PyAV, `encode_prompts` on frame 0, the
  default segmenter's `segment` on every frame, library threading at its defaults. **speedup** = our fps /
  naive fps on the same clips. J&F (`operators.metrics.evaluate_clip`) on the clips' ground truth: ours
  with `matching="track"`; naive with `matching="frame"` (per-frame Hungarian, generous to it) and with
  track ids from the project's `TrackAssigner` on consecutive frames (`matching="track"`). "ours
  in-process" runs the same operators with `run_stream` + `local_submit` in one process (no Ray).
"""


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


def _ours_local(clip: BenchClip, keyframe_every: int | None) -> tuple[float, list[Instances]]:
    """Our operators in one process, no Ray (``run_stream`` + ``local_submit``), default threading;
    ``keyframe_every=None`` leaves the keyframe policy at the stream's default."""
    from operators.keyframes import KeyframeConfig
    from operators.segmenters import build_segmenter
    from operators.stream import StreamProcessor, local_submit, run_stream

    records: list[FrameRecord] = []
    started = time.perf_counter()
    with open_video(clip.path) as video:
        keyframes = None if keyframe_every is None else KeyframeConfig(every=keyframe_every)
        processor = StreamProcessor("local", str(clip.path), [clip.prompt], keyframes=keyframes)
        run_stream(video.frames(), processor, local_submit(build_segmenter("default")), records.append)
    return time.perf_counter() - started, [r.instances for r in records]


def naive_and_in_process(clip: BenchClip, keyframe_every: int | None) -> dict[str, float]:
    """One clip through the naive loop and through ours in-process: seconds and J&F of each.

    ``keyframe_every=None``: ours at the stream's default keyframe policy."""
    naive_s, found = _naive_clip(clip)
    naive_frame, naive_track = jf(found, clip, "frame"), jf(_with_track_ids(found), clip, "track")
    del found  # a clip's masks at 1080p are large: one method's at a time
    local_s, ours = _ours_local(clip, keyframe_every)
    return {"naive_s": naive_s, "naive_jf_frame": naive_frame, "naive_jf_track": naive_track,
            "ours_local_s": local_s, "ours_local_jf_track": jf(ours, clip, "track")}


def run(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    clips = ctx.clips()
    frames = sum(c.frames for c in clips)
    runs = []
    for clip in clips:
        log(f"naive: {clip.path.name}")
        runs.append(naive_and_in_process(clip, cfg.keyframe_every))
    naive_frame, naive_track = [r["naive_jf_frame"] for r in runs], [r["naive_jf_track"] for r in runs]
    local_track = [r["ours_local_jf_track"] for r in runs]
    naive_fps = frames / sum(r["naive_s"] for r in runs)
    ours_local_s = sum(r["ours_local_s"] for r in runs)
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
        figures = e2e_figures(wall, summary, job_workers(len(clips)))
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


def rows(v: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        ("naive decode + segment every frame (fps)", fmt(v["naive_fps"])),
        (f"ours in-process, no Ray, K={v['keyframe_every']} (fps)", fmt(v["ours_local_fps"])),
        ("speedup in-process", f"{v['speedup_local']:.3f}"),
    ]
    for key in sorted(k for k in v if k.startswith("speedup_ray_")):
        label = key.rsplit("_", 1)[1]
        found.append((f"speedup, Ray pipeline {label} stream(s)", f"{v[key]:.3f}"))
    found += [
        ("J&F naive (frame matching / track ids by TrackAssigner)", f"{v['naive_jf_frame_mean']:.4f} / {v['naive_jf_track_mean']:.4f}"),
        ("J&F ours in-process (track matching)", f"{v['ours_local_jf_track_mean']:.4f}"),
    ]
    for key in sorted(k for k in v if k.startswith("jf_delta_ray_")):
        found.append((f"J&F delta {key[len('jf_delta_'):]}", f"{v[key]:+.4f}"))
    return found
