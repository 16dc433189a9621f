"""``annotate``: drawing a frame's masks, outlines and labels: ``operators.annotate`` against supervision's
annotators (``MaskAnnotator``, ``PolygonAnnotator``, ``LabelAnnotator``) on the same frames and instances.

Whether supervision's annotators could draw ``annotated.mp4`` without costing speed (issue 16, item 5).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from bench.context import Context
from bench.report import fmt
from operators.annotate import ContourAnnotator, LabelAnnotator, MaskAnnotator
from operators.records import Instances
from pipeline.sources import open_video

NAME = "annotate"
TITLE = "Annotation drawing"
DEFINITION = """\
- **annotation drawing**: ms per frame to draw translucent masks (opacity 0.5), 2-px outlines and
  `#track p<prompt> score` labels on the first benchmark clip's frames, its ground-truth objects as the
  instances: `operators.annotate` (what the mp4 sink draws) against supervision's `MaskAnnotator`,
  `PolygonAnnotator` and `LabelAnnotator` (track colours), each stage and the whole chain (also with the
  `Instances.to_supervision` a sink would need); the frame copy each needs is counted; best of 5 passes.
"""

#: Frames drawn per annotator: enough for a stable mean, few enough for --quick.
MAX_FRAMES = 60
REPEATS = 5


def _frames_and_instances(ctx: Context) -> list[tuple[np.ndarray, Instances]]:
    clip = ctx.clips()[0]
    with open_video(clip.path) as video:
        images = [frame.image for _, frame in zip(range(MAX_FRAMES), video.frames())]
    pairs = []
    for image, truth in zip(images, clip.truth()):
        ids = sorted(truth)
        instances = Instances.from_masks([truth[o] for o in ids], np.linspace(0.6, 0.9, len(ids)), ids, *clip.shape)
        pairs.append((image, instances.with_track_ids(ids)))
    return pairs


def _ms_per_frame(draw: Callable[[np.ndarray, Any], Any], pairs: list[tuple[np.ndarray, Any]]) -> float:
    """The best of ``REPEATS`` passes over the frames: on a shared machine the others mostly time its load."""
    draw(*pairs[0])  # warm-up (fonts, first allocations)
    passes = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for image, item in pairs:
            draw(image, item)
        passes.append(time.perf_counter() - started)
    return round(1e3 * min(passes) / len(pairs), 3)


def _labels(detections: Any) -> list[str]:
    return [f"#{t} p{c} {s:.2f}" for t, c, s in zip(detections.tracker_id, detections.class_id, detections.confidence)]


def run(ctx: Context) -> dict[str, Any]:
    try:
        import supervision as sv
    except ImportError:
        return {"skipped": "needs the 'supervision' extra: pip install 'xsam-pipeline[supervision]'"}
    pairs = _frames_and_instances(ctx)
    ours = {"masks": MaskAnnotator(0.5), "outlines": ContourAnnotator(2), "labels": LabelAnnotator()}
    lookup = sv.ColorLookup.TRACK
    theirs = {"masks": sv.MaskAnnotator(opacity=0.5, color_lookup=lookup),
              "outlines": sv.PolygonAnnotator(thickness=2, color_lookup=lookup),
              "labels": sv.LabelAnnotator(color_lookup=lookup, text_padding=3)}
    converted = [(image, instances.to_supervision()) for image, instances in pairs]

    def ours_chain(image, instances):
        for annotator in ours.values():
            image = annotator.annotate(image, instances)
        return image

    def theirs_one(name):
        if name == "labels":
            return lambda image, d: theirs[name].annotate(image.copy(), d, labels=_labels(d))
        return lambda image, d: theirs[name].annotate(image.copy(), d)

    def theirs_chain(image, detections):
        image = theirs["masks"].annotate(image.copy(), detections)
        image = theirs["outlines"].annotate(image, detections)
        return theirs["labels"].annotate(image, detections, labels=_labels(detections))

    result: dict[str, Any] = {"frames": len(pairs), "size": f"{pairs[0][0].shape[1]}x{pairs[0][0].shape[0]}",
                              "objects_mean": round(float(np.mean([len(i) for _, i in pairs])), 2),
                              "supervision": sv.__version__}
    for name, annotator in ours.items():
        result[f"ours_{name}_ms"] = _ms_per_frame(annotator.annotate, pairs)
        result[f"supervision_{name}_ms"] = _ms_per_frame(theirs_one(name), converted)
    result["ours_chain_ms"] = _ms_per_frame(ours_chain, pairs)
    result["supervision_chain_ms"] = _ms_per_frame(theirs_chain, converted)
    result["supervision_chain_converting_ms"] = _ms_per_frame(
        lambda image, instances: theirs_chain(image, instances.to_supervision()), pairs)
    result["to_supervision_ms"] = _ms_per_frame(lambda image, instances: instances.to_supervision(), pairs)
    return result


def rows(d: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    if "skipped" in d:
        return [("annotation drawing", d["skipped"])]
    found = [(f"frames drawn ({d['size']}, {d['objects_mean']} objects/frame)", fmt(d["frames"]))]
    for name in ("masks", "outlines", "labels", "chain"):
        found.append((f"{name}: operators.annotate / supervision {d['supervision']} (ms/frame)",
                      f"{fmt(d[f'ours_{name}_ms'])} / {fmt(d[f'supervision_{name}_ms'])}"))
    found.append(("supervision's chain with Instances.to_supervision (ms/frame)",
                  fmt(d["supervision_chain_converting_ms"])))
    found.append(("Instances.to_supervision alone (ms/frame)", fmt(d["to_supervision_ms"])))
    return found
