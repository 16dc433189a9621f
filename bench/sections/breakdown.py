"""``breakdown``: one stream's frame by step.

Every clip through ``run_stream`` on one thread (keyframes in-process with ``local_submit``, the sink's
record encoding done in ``emit``), each step timed through ``StreamProcessor``'s step-timer hook
(:data:`operators.stream.StepTimer`); decode, keyframes and emit are timed around the callables the
bench hands ``run_stream``. Says which steps the capacity formula counts (decode, ``segment`` +
``refresh``, flow and warp on propagated frames) and which it does not (flow and warp to keyframes,
association, the scene-cut signature, flow support, record encoding), and so the efficiency one thread
could reach at best. Decode on one FFmpeg thread, as each of several streams decodes. After the pipeline
section: the N-stream run's wall efficiency as that ceiling x streams in parallel vs one thread x wall
vs steady.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator, Sequence

from bench.context import Context
from bench.report import fmt
from bench.timing import StepTotals, cv2_threads
from bench.videos import BenchClip
from operators.records import FrameRecord
from pipeline.sources import open_video

NAME = "breakdown"
TITLE = "One stream's frame, step by step (what the capacity counts and what it does not)"
DEFINITION = """\
- **stream breakdown**: every clip through `run_stream` on one thread (keyframes in-process, the sink's
  record encoding in the emit callback), each step timed through `StreamProcessor`'s step-timer hook. The
  capacity below counts decode, `segment` + `refresh` on keyframes and flow + warp on propagated frames; it
  does not count the flow and warp to keyframes, association, the scene-cut signature, flow support or the
  record encoding, which every stream also runs. counted / all is the best efficiency one stream on
  one thread could reach. Decode runs on one FFmpeg thread, as each of several streams decodes. When the
  pipeline section ran too, the N-stream run's wall efficiency is split into three factors: this
  one-thread ceiling x (steady efficiency / ceiling: the streams in parallel on shared cores against one
  thread alone) x (wall / steady: start-up and tail).
"""

#: The steps timed; those nested in another (``association``, ``warp``, ``flow_support``) are not in ``OUTER``.
STEPS = ("decode", "scene_cut_signature", "flow", "segment_refresh", "finish_keyframe", "association",
         "finish_propagated", "warp", "flow_support", "record_encoding")
OUTER = ("decode", "scene_cut_signature", "flow", "segment_refresh", "finish_keyframe", "finish_propagated",
         "record_encoding")


def stream_breakdown(clips: Sequence[BenchClip], keyframe_every: int) -> dict[str, Any]:
    """ms per frame of each step of one stream, all on one thread (see the module docstring)."""
    from operators.keyframes import KeyframeConfig
    from operators.segmenters import build_segmenter
    from operators.stream import StreamProcessor, local_submit, run_stream

    totals = StepTotals(STEPS)
    frames = keyframes = 0
    seconds = 0.0

    def emit(record: FrameRecord) -> None:
        with totals("record_encoding"):
            json.dumps(record.to_dict())

    with cv2_threads(1):
        for clip in clips:
            run_keyframe = local_submit(build_segmenter("default"))

            def submit(request: Any) -> Any:
                with totals("segment_refresh"):
                    return run_keyframe(request)

            with open_video(clip.path, threads=1) as video:  # as each of several streams decodes
                decoded = video.frames()

                def timed_frames() -> Iterator[Any]:
                    while True:
                        with totals("decode"):
                            frame = next(decoded, None)
                        if frame is None:
                            return
                        yield frame

                processor = StreamProcessor(clip.path.stem, str(clip.path), [clip.prompt],
                                            keyframes=KeyframeConfig(every=keyframe_every), timer=totals)
                started = time.perf_counter()
                run_stream(timed_frames(), processor, submit, emit)
                seconds += time.perf_counter() - started
            frames += processor.stats.frames
            keyframes += processor.stats.keyframes
    ms = {name: 1e3 * total / frames for name, total in totals.seconds.items()}
    # Flow runs on every frame before its kind is known; the capacity counts it on propagated frames only.
    keyframe_flow = ms["flow"] * keyframes / frames
    uncounted = (keyframe_flow + ms["finish_keyframe"] + ms["scene_cut_signature"] + ms["record_encoding"]
                 + ms["finish_propagated"] - ms["warp"] * (1 - keyframes / frames))
    total = 1e3 * seconds / frames
    return {
        "frames": frames, "keyframes": keyframes, "total_ms": round(total, 3),
        "steps_ms": {name: round(value, 3) for name, value in ms.items()},
        "keyframe_flow_ms": round(keyframe_flow, 3),
        "rest_ms": round(total - sum(ms[n] for n in OUTER), 3),
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


def run(ctx: Context) -> dict[str, Any]:
    result = stream_breakdown(ctx.clips(), ctx.cfg.keyframe_every)
    # The breakdown ran the same clips as the pipeline's run of every stream: explain that run's efficiency.
    pipeline_run = ctx.pipeline_runs.get(str(len(ctx.clips())))
    if pipeline_run is not None:
        result["efficiency_factors"] = efficiency_factors(result, pipeline_run)
    return result


def rows(b: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    steps = b["steps_ms"]
    found = [
        (f"one stream on one thread, all steps ({b['frames']} frames, {b['keyframes']} keyframes), ms/frame",
         fmt(b["total_ms"])),
        ("decode (counted)", fmt(steps["decode"])),
        ("segment + refresh on keyframes (counted)", fmt(steps["segment_refresh"])),
        ("flow on every frame (counted on propagated frames; on keyframes)", f"{fmt(steps['flow'])} ({fmt(b['keyframe_flow_ms'])})"),
        ("propagated frames: warp (counted), flow support, record", f"{fmt(steps['finish_propagated'])} "
         f"(flow support {fmt(steps['flow_support'])})"),
        ("keyframes: warp to the keyframe, association, record", f"{fmt(steps['finish_keyframe'])} "
         f"(association {fmt(steps['association'])})"),
        ("scene-cut signature", fmt(steps["scene_cut_signature"])),
        ("record encoding, RLE + JSON (the sink's work)", fmt(steps["record_encoding"])),
        ("the rest (loop, policy, prompts)", fmt(b["rest_ms"])),
        ("**not counted by the capacity** (ms/frame)", fmt(b["uncounted_ms"])),
        ("best efficiency of one stream on one thread (counted / all)", f"{b['single_thread_ceiling']:.3f}"),
    ]
    if "efficiency_factors" in b:
        e = b["efficiency_factors"]
        found.append((
            "all streams' wall efficiency = one-thread ceiling x streams in parallel vs one thread x wall vs steady",
            f"{e['efficiency']:.3f} = {e['single_thread_ceiling']:.3f} x {e['parallel_vs_one_thread']:.3f} x "
            f"{e['wall_vs_steady']:.3f}"))
    return found
