"""DAVIS video-segmentation metrics: region similarity J, boundary F-measure F, and J&F.

Definitions follow the DAVIS benchmark (Perazzi et al., CVPR 2016), reimplemented:

* J is the IoU of the predicted and ground-truth masks; two empty masks score 1.
* F compares the masks' one-pixel boundary maps (a pixel whose right, lower or
  lower-right neighbour lies on the other side of the mask's edge, as the
  reference's ``seg2bmap``) with a tolerance of ``bound_th`` times the image
  diagonal, rounded up (0.008 in DAVIS): a boundary pixel counts as matched when
  the other boundary lies within a disk of that radius. F = 2PR / (P + R).
* Per object over a clip: the mean, the recall (fraction of frames above 0.5) and
  the decay (mean of the first quarter of the frames minus that of the last).
* J&F of a clip is the mean of J-Mean and F-Mean, each averaged per object first.

``tests/test_metrics.py`` checks these against an independent transcription of the
davis2017-evaluation code's definitions, within 1e-6.

Predictions arrive as unordered :class:`Instances`; the matching helpers decide which
predicted mask stands for which ground-truth object, either once per clip by track
id or per frame (Hungarian on IoU). Identity metrics can reuse :func:`iou_matrix`
and :func:`hungarian_match`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Mapping, Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from operators.records import Instances

#: DAVIS boundary tolerance as a fraction of the image diagonal.
DAVIS_BOUND_TH = 0.008

#: Ground truth of one frame: object id -> boolean (H, W) mask (empty while the object is absent).
FrameTruth = Mapping[int, np.ndarray]

Matching = Literal["frame", "track"]


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J: intersection over union of two boolean masks; 1 when both are empty."""
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Pixels whose right, lower or lower-right neighbour is on the other side of the mask's edge.

    DAVIS's boundary (``seg2bmap``): one pixel wide, half a pixel towards the origin from the edge, so it
    holds mask and background pixels alike. Neighbours outside the frame are not compared: the frame edge
    is not a contour.
    """
    mask = np.asarray(mask, bool)
    edge = np.zeros_like(mask)
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return edge


def boundary_tolerance(height: int, width: int, bound_th: float = DAVIS_BOUND_TH) -> int:
    """Tolerance radius in pixels; ``bound_th`` >= 1 is taken as pixels, as in DAVIS."""
    if bound_th >= 1:
        return int(math.ceil(bound_th))
    return int(math.ceil(bound_th * math.hypot(height, width)))


def _disk(radius: int) -> np.ndarray:
    """Offsets within ``radius`` (x² + y² <= r²), the structuring element the tolerance dilates by."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8)


def _window(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns around both masks, one pixel wider: every boundary pixel and each neighbour it is
    compared with lie inside, so F counts there what it counts on the whole frame (36 -> 5 ms a 1080p
    object)."""
    rows = np.flatnonzero(pred.any(axis=1) | gt.any(axis=1))
    cols = np.flatnonzero(pred.any(axis=0) | gt.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(max(0, rows[0] - 1), rows[-1] + 2), slice(max(0, cols[0] - 1), cols[-1] + 2)


def boundary_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = DAVIS_BOUND_TH) -> float:
    """F: boundary F-measure of two boolean masks; 1 when both boundaries are empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    rows, cols = _window(pred, gt)
    pred_edge, gt_edge = boundary_map(pred[rows, cols]), boundary_map(gt[rows, cols])
    n_pred, n_gt = np.count_nonzero(pred_edge), np.count_nonzero(gt_edge)
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    disk = _disk(boundary_tolerance(*gt.shape, bound_th))  # the whole frame's tolerance
    gt_near = cv2.dilate(gt_edge.astype(np.uint8), disk).astype(bool)
    pred_near = cv2.dilate(pred_edge.astype(np.uint8), disk).astype(bool)
    precision = np.count_nonzero(pred_edge & gt_near) / n_pred
    recall = np.count_nonzero(gt_edge & pred_near) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Statistics:
    """DAVIS's summary of one object's per-frame scores."""

    mean: float
    recall: float  # fraction of frames scoring above 0.5
    decay: float  # mean of the first quarter of the frames minus mean of the last quarter


def statistics(per_frame: Sequence[float]) -> Statistics:
    """Mean, recall and decay of per-frame scores, with DAVIS's quarters.

    The quarters are cut at ``round(1 + i (T - 1) / 4)`` for i = 0..4 (halves rounded up), 1-based, and
    neighbouring quarters share their boundary frame, as in the reference's ``db_statistics`` (which casts the
    cuts to uint8, so wraps them past 256 frames; these do not).
    """
    values = np.asarray(per_frame, np.float64)
    if values.size == 0:
        raise ValueError("statistics need at least one frame")
    # 1 + i (T - 1) / 4 rounded half up, in integers, then 0-based.
    cuts = [(4 + i * (values.size - 1) + 2) // 4 - 1 for i in range(5)]
    first, last = values[cuts[0] : cuts[1] + 1], values[cuts[3] : cuts[4] + 1]
    return Statistics(float(values.mean()), float(np.mean(values > 0.5)), float(first.mean() - last.mean()))


@dataclass(frozen=True)
class ObjectScores:
    """Per-frame J and F of one object over a clip."""

    j: np.ndarray  # (T,) float
    f: np.ndarray  # (T,) float

    @property
    def j_statistics(self) -> Statistics:
        return statistics(self.j)

    @property
    def f_statistics(self) -> Statistics:
        return statistics(self.f)


def object_scores(
    pred_masks: Sequence[np.ndarray], gt_masks: Sequence[np.ndarray], bound_th: float = DAVIS_BOUND_TH
) -> ObjectScores:
    """J and F of one object on every frame of a clip."""
    if len(pred_masks) != len(gt_masks):
        raise ValueError(f"{len(pred_masks)} predicted frames for {len(gt_masks)} ground-truth frames")
    return ObjectScores(
        j=np.array([region_similarity(p, g) for p, g in zip(pred_masks, gt_masks)], np.float64),
        f=np.array([boundary_measure(p, g, bound_th) for p, g in zip(pred_masks, gt_masks)], np.float64),
    )


def _mean_of_object_means(per_object: Iterable[np.ndarray]) -> float:
    return float(np.mean([values.mean() for values in per_object]))


def jf_mean(scores: Iterable[ObjectScores]) -> float:
    """DAVIS J&F-Mean: (J-Mean + F-Mean) / 2, each the mean over objects of per-object means."""
    scores = list(scores)
    if not scores:
        raise ValueError("jf_mean needs at least one object")
    return (_mean_of_object_means(s.j for s in scores) + _mean_of_object_means(s.f for s in scores)) / 2


def _box(mask: np.ndarray) -> tuple[int, int, int, int]:
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    return x, y, x + w, y + h


def iou_matrix(pred_masks: np.ndarray, gt_masks: np.ndarray) -> np.ndarray:
    """``(N, M)`` IoU between N predicted and M ground-truth ``(H, W)`` boolean masks.

    Intersections are counted only where the two masks' boxes overlap: the cost follows the objects'
    size, not the frame's.
    """
    pred_boxes, gt_boxes = [_box(m) for m in pred_masks], [_box(m) for m in gt_masks]
    pred_areas = np.array([np.count_nonzero(m) for m in pred_masks], np.float64)
    gt_areas = np.array([np.count_nonzero(m) for m in gt_masks], np.float64)
    inter = np.zeros((len(pred_masks), len(gt_masks)))
    for i, (pred, (px0, py0, px1, py1)) in enumerate(zip(pred_masks, pred_boxes)):
        for j, (gt, (gx0, gy0, gx1, gy1)) in enumerate(zip(gt_masks, gt_boxes)):
            x0, y0, x1, y1 = max(px0, gx0), max(py0, gy0), min(px1, gx1), min(py1, gy1)
            if x0 < x1 and y0 < y1:
                inter[i, j] = np.count_nonzero(pred[y0:y1, x0:x1] & gt[y0:y1, x0:x1])
    union = pred_areas[:, None] + gt_areas[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float32)


def hungarian_match(similarity: np.ndarray, min_similarity: float = 0.0) -> list[tuple[int, int]]:
    """Row/column pairs maximising total similarity; pairs at or below ``min_similarity`` are dropped."""
    if similarity.size == 0:
        return []
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if similarity[r, c] > min_similarity]


def _stack_truth(truth: FrameTruth, object_ids: Sequence[int]) -> np.ndarray:
    return np.stack([np.asarray(truth[o], bool) for o in object_ids])


def assign_per_frame(pred_frames: Sequence[Instances], gt_frames: Sequence[FrameTruth]) -> list[dict[int, np.ndarray]]:
    """Each frame on its own: the predicted mask matched to each object (empty when unmatched)."""
    assigned = []
    for pred, truth in zip(pred_frames, gt_frames, strict=True):
        object_ids = list(truth)
        empty = np.zeros(pred.shape, bool)
        frame = {o: empty for o in object_ids}
        if object_ids and len(pred):
            for p, g in hungarian_match(iou_matrix(pred.masks, _stack_truth(truth, object_ids))):
                frame[object_ids[g]] = pred.masks[p]
        assigned.append(frame)
    return assigned


def assign_by_track(pred_frames: Sequence[Instances], gt_frames: Sequence[FrameTruth]) -> list[dict[int, np.ndarray]]:
    """One track per object for the whole clip, chosen by IoU summed over frames.

    Untracked predictions (track id -1) are ignored: identity is what this mode scores.
    """
    object_ids = sorted({o for truth in gt_frames for o in truth})
    track_ids = sorted({int(t) for pred in pred_frames for t in pred.track_ids if t >= 0})
    total_iou = np.zeros((len(track_ids), len(object_ids)))
    for pred, truth in zip(pred_frames, gt_frames, strict=True):
        present = [o for o in object_ids if o in truth]
        tracked = pred.track_ids >= 0
        if not present or not tracked.any():
            continue
        ious = iou_matrix(pred.masks[tracked], _stack_truth(truth, present))
        rows = [track_ids.index(int(t)) for t in pred.track_ids[tracked]]
        cols = [object_ids.index(o) for o in present]
        np.add.at(total_iou, (np.array(rows)[:, None], np.array(cols)[None, :]), ious)
    track_of = {object_ids[g]: track_ids[t] for t, g in hungarian_match(total_iou)}

    return [
        {
            o: pred.masks[pred.track_ids == track_of[o]].any(axis=0) if o in track_of else np.zeros(pred.shape, bool)
            for o in truth
        }
        for pred, truth in zip(pred_frames, gt_frames)
    ]


@dataclass(frozen=True)
class ClipScores:
    """J and F per ground-truth object of one clip."""

    objects: dict[int, ObjectScores]

    @property
    def j_mean(self) -> float:
        return _mean_of_object_means(s.j for s in self.objects.values())

    @property
    def f_mean(self) -> float:
        return _mean_of_object_means(s.f for s in self.objects.values())

    @property
    def jf_mean(self) -> float:
        return jf_mean(self.objects.values())


def evaluate_clip(
    pred_frames: Sequence[Instances],
    gt_frames: Sequence[FrameTruth],
    matching: Matching = "frame",
    bound_th: float = DAVIS_BOUND_TH,
) -> ClipScores:
    """Match predictions to ground truth (``"frame"`` or ``"track"``), then score every object."""
    assign = {"frame": assign_per_frame, "track": assign_by_track}[matching]
    assigned = assign(pred_frames, gt_frames)
    empty = [np.zeros(pred.shape, bool) for pred in pred_frames]
    scores = {}
    for o in sorted({o for truth in gt_frames for o in truth}):
        predicted = [frame.get(o, none) for frame, none in zip(assigned, empty)]
        truth = [np.asarray(frame.get(o, none), bool) for frame, none in zip(gt_frames, empty)]
        scores[o] = object_scores(predicted, truth, bound_th)
    return ClipScores(scores)
