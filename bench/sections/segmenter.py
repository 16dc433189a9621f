"""``segmenter``: the default segmenter's steps on one clip at the clip size, one OpenCV thread (as the
actors run).

Keyframe step = ``segment`` + ``refresh`` (what ``run_keyframe`` does per keyframe; ``encode_prompts``
once per prompt, reported apart), propagation step = ``FlowPropagator.flow`` + ``warp``, in ms per frame.
``segmenter_fps(K) = 1000 / (seg_ms / K + prop_ms * (K - 1) / K)``. ``operator_fps(K)`` is what the
pipeline really runs per frame: flow and warp on every frame (keyframes too, for association),
``segment`` + ``refresh`` on keyframes, the scene-cut signature and the sink's record encoding
(RLE + JSON); decode excluded.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from bench.context import Context
from bench.report import fmt
from bench.timing import Steps, cv2_threads
from bench.videos import BenchClip, read_frames
from operators.records import FrameRecord

NAME = "segmenter"
TITLE = "Segmenter alone"
DEFINITION = """\
- **segmenter alone** (one OpenCV thread, as in the actors, at the clip size): keyframe step = `segment`
  + `refresh`, what a keyframe costs (`encode_prompts` runs once per prompt and is reported apart);
  propagation step = `FlowPropagator.flow`
  + `warp`. **segmenter fps** at keyframe interval K = `1000 / (seg_ms / K + prop_ms * (K - 1) / K)`.
  **operator fps** = what a stream really runs per frame: flow + warp on every frame (keyframes too, for
  association), the keyframe step / K, the scene-cut signature and the record encoding
  (RLE + JSON); decode excluded.
"""


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


def run(ctx: Context) -> dict[str, Any]:
    return measure_segmenter(ctx.clips()[0], ctx.cfg.micro_frames, ctx.cfg.keyframe_every)



def rows(g: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    k = g["keyframe_every"]
    return [
        (f"encode_prompts once, {g['size']} (ms)", fmt(g["encode_prompts_ms"]["mean"])),
        ("keyframe step: segment + refresh (ms/frame)", f"{fmt(g['keyframe_step_ms'])} ({fmt(g['segment_ms']['mean'])} + {fmt(g['refresh_ms']['mean'])})"),
        ("re-anchoring keyframe (ill-posed flow): segment around the objects (ms/frame)", fmt(g["reanchor_step_ms"])),
        ("propagation step: flow + warp (ms/frame)", f"{fmt(g['propagation_step_ms'])} ({fmt(g['flow_ms']['mean'])} + {fmt(g['warp_ms']['mean'])})"),
        (f"segmenter fps at K={k}", fmt(g["segmenter_fps"])),
        ("segmenter fps at K=1 (segment every frame)", fmt(g["segment_every_frame_fps"])),
        (f"operator fps at K={k} (all per-frame work in the stream, no decode)", fmt(g["operator_fps"])),
    ]
