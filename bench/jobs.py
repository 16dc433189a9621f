"""Pipeline jobs as the sections run them: Ray started once, one timed ``run_job``, its figures."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from bench.timing import timed
from operators.records import FrameRecord, Instances, Prompt


def ensure_ray() -> None:
    """Start (or join) Ray once, on loopback, before anything is timed."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline.runtime import init_ray

    init_ray(None)


def run_pipeline(
    clips: Sequence[tuple[Path, Prompt]], out_dir: Path, keyframe_every: int | None, parallel: int | None,
    split: bool = False,
) -> tuple[float, dict[str, Any]]:
    """One timed ``run_job`` (archive mode, jsonl sink); returns wall seconds and the summary dict.

    ``keyframe_every=None`` leaves the job's default keyframe policy. ``split``: a video may go over
    several stream workers (:mod:`pipeline.split`); off unless asked, so a section's stream count is its
    stream workers'."""
    from pipeline.config import JobConfig
    from pipeline.job import run_job

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    prompts_file = out_dir.parent / f"{out_dir.name}-prompts.json"
    prompts_file.write_text(json.dumps({Path(p).name: [{"type": "box", "box": list(prompt.box)}] for p, prompt in clips}))
    keyframes = {} if keyframe_every is None else {"keyframe_every": keyframe_every}
    config = JobConfig(
        sources=[str(p) for p, _ in clips], out_dir=out_dir, prompts_file=prompts_file, sinks=["jsonl"],
        progress=False, resume=False, parallel=parallel, split=split, **keyframes,
    )
    seconds, summary = timed(lambda: run_job(config))
    result = summary.to_dict()
    failed = result["failures"]
    if failed:
        raise RuntimeError(f"pipeline run failed: {failed}")
    return seconds, result


def read_records(out_dir: Path, stream_id: str) -> list[Instances]:
    lines = (out_dir / stream_id / "frames.jsonl").read_text().splitlines()
    return [FrameRecord.from_dict(json.loads(line)).instances for line in lines]



def job_workers(videos: int) -> int:
    """Stream workers ``run_job`` starts for ``videos`` when ``parallel`` is unset: one per CPU of the cluster."""
    import ray

    return min(videos, max(1, int(ray.cluster_resources().get("CPU", 1))))


def e2e_figures(wall: float, summary: dict[str, Any], workers: int) -> dict[str, Any]:
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

