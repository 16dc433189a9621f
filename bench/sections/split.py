"""``split``: one long video on every core (``pipeline.split``) against one stream worker: fps, J&F, ID switches."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.clips import ClipSpec, make_clip
from bench.config import cores, load, log
from bench.context import Context
from bench.jobs import run_pipeline
from bench.report import fmt
from operators.identity_metrics import identity_scores
from operators.metrics import evaluate_clip
from operators.records import FrameRecord, Instances

NAME = "split"
TITLE = "One long video over every core (split)"
#: Masks are scored on every this-many-th row and column: 1800 HD frames' full masks would not fit in memory.
TRUTH_STEP = 4
DEFINITION = f"""\
- **split**: one `split_frames`-frame clip (1800 at the bench size; quick: 300), two objects, one prompt, in
  `run_job(JobConfig(..., sinks=["jsonl"], progress=False))` with `parallel` unset (one slot per core):
  `split=False` (one stream worker; the job lends it the idle cores) against `split=True` (chunks on every
  core, ids stitched by mask IoU on the shared frames). Ray is warm; each run is timed whole (`run_job`, so
  actor start-up, the prompts' encoding for the later chunks and the join of the chunks' outputs are in it).
  **fps** = frames / that wall time; **speed-up** = split fps / one-worker fps. **J&F** (track matching) and
  **ID switches** (CLEAR-MOT, IoU 0.5, `operators.identity_metrics`) against the clip's ground truth, both on
  masks keeping every {TRUTH_STEP}th row and column (the same for both runs).
"""


def _scores(out: Path, truth: list[dict[int, np.ndarray]]) -> dict[str, Any]:
    """J&F and identity figures of a run's ``frames.jsonl``, its masks thinned as the truth's."""
    frames = []
    with open(out / "long" / "frames.jsonl", "rb") as lines:
        for line in lines:
            found = FrameRecord.from_dict(json.loads(line)).instances
            frames.append(Instances(found.masks[:, ::TRUTH_STEP, ::TRUTH_STEP], found.scores, found.prompt_ids,
                                    found.track_ids))
    identity = identity_scores(frames, truth)
    return {"jf": round(evaluate_clip(frames, truth, matching="track").jf_mean, 4),
            "id_switches": identity.id_switches, "idf1": round(identity.idf1, 4),
            "tracks": sorted({int(t) for f in frames for t in f.track_ids})}


def run(ctx: Context) -> dict[str, Any]:
    cfg = ctx.cfg
    log(f"split: rendering one clip of {cfg.split_frames} frames at {cfg.width}x{cfg.height}")
    folder = ctx.work / "split-clip"
    folder.mkdir(parents=True, exist_ok=True)
    spec = ClipSpec(seed=21, width=cfg.width, height=cfg.height, num_frames=cfg.split_frames)
    clip = make_clip(spec, folder / "long.mp4", truth_step=TRUTH_STEP)
    # The prompt from frame 0 at full size: the clip's truth is thinned, and its first frames do not depend
    # on its length (no scale change, occluder or exits).
    opening = make_clip(dataclasses.replace(spec, num_frames=2), folder / "long.mp4", encode=False)
    prompt = opening.suggested_prompt(opening.kinds[min(opening.kinds)], "box")
    ctx.warm_ray()
    result: dict[str, Any] = {"cores": cores(), "frames": cfg.split_frames, "size": f"{cfg.width}x{cfg.height}",
                              "keyframe_every": cfg.keyframe_every, "load_before": load()}
    for label, split in (("one_worker", False), ("split", True)):
        log(f"split: {label}")
        out = ctx.work / f"split-{label}"
        wall, summary = run_pipeline([(clip.path, prompt)], out, cfg.keyframe_every, parallel=None, split=split)
        video = summary["videos"][0]
        result[label] = {"wall_s": round(wall, 3), "fps": round(video["frames"] / wall, 1),
                         "keyframes": video["keyframes"], "chunks": len(video["chunks"]) or 1, **_scores(out, clip.masks)}
    result["load_after"] = load()
    one, split = result["one_worker"], result["split"]
    result["speedup"] = round(split["fps"] / one["fps"], 2)
    result["jf_delta"] = round(split["jf"] - one["jf"], 4)
    return result


def rows(d: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    one, split = d["one_worker"], d["split"]
    where = f"{d['frames']} frames at {d['size']}, {d['cores']} cores"
    return [
        (f"one worker, {where} (fps)", fmt(one["fps"])),
        (f"split into {split['chunks']} chunks (fps)", fmt(split["fps"])),
        ("speed-up (target >= 1.7)", fmt(d["speedup"])),
        ("J&F one worker / split (delta, target within 0.01)", f"{one['jf']} / {split['jf']} ({d['jf_delta']:+})"),
        ("ID switches one worker / split (target: split no more)", f"{one['id_switches']} / {split['id_switches']}"),
        ("IDF1 one worker / split", f"{one['idf1']} / {split['idf1']}"),
        ("load average before / after", f"{d['load_before']} / {d['load_after']}"),
    ]
