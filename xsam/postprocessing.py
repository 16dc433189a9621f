"""Decoder outputs -> image-resolution results, per task (X-SAM ``dataset/process_fns/postprocess_fns``).

Every rule first brings mask logits to the image the way X-SAM does: bilinear to the padded SAM canvas,
crop to the resized image, bilinear to the original size. Masks are only brought up for the queries a rule
can keep (the final VGD score is the class score times a mean probability inside the mask, which is at
most the sigmoid of the query's largest logit, so a pair whose class score times that bound is below the
threshold never needs its full-resolution mask); the kept results are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers.models.mask2former.image_processing_pil_mask2former import compute_segments

from xsam.processing_xsam import ImageGeometry


@dataclass
class XSamPrediction:
    """Instances found in one image, best first.

    labels: the prompt (VGD), class (generic) index, or 0 for single-target tasks.
    embeddings: the decoder query state of each instance, ``(K, D)``; None for merged (panoptic/semantic) regions.
    text: the generated answer in generation mode.
    """

    masks: np.ndarray  # (K, H, W) bool
    scores: np.ndarray  # (K,) float32
    labels: np.ndarray  # (K,) int64
    embeddings: np.ndarray | None = None  # (K, D) float32
    text: str | None = None

    @classmethod
    def empty(cls, image_size: tuple[int, int], text: str | None = None) -> XSamPrediction:
        return cls(np.zeros((0, *image_size), bool), np.zeros(0, np.float32), np.zeros(0, np.int64), None, text)

    def __len__(self) -> int:
        return len(self.masks)


def canvas_to_image(maps: torch.Tensor, geometry: ImageGeometry, mode: str = "bilinear") -> torch.Tensor:
    """``(N, S, S)`` maps on the SAM canvas -> ``(N, H, W)``: crop the resized image, resize to the original."""
    height, width = geometry.scaled_size
    cropped = maps[:, None, :height, :width].float()
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(cropped, size=geometry.image_size, mode=mode, **kwargs)[:, 0]


def mask_logits_to_image(mask_logits: torch.Tensor, geometry: ImageGeometry) -> torch.Tensor:
    """``(N, h, w)`` decoder mask logits -> ``(N, H, W)`` logits at the original image size."""
    canvas = (geometry.canvas, geometry.canvas)
    upsampled = F.interpolate(mask_logits[:, None].float(), size=canvas, mode="bilinear", align_corners=False)[:, 0]
    return canvas_to_image(upsampled, geometry)


def class_probabilities(class_logits: torch.Tensor, class_groups: torch.Tensor | None = None) -> torch.Tensor:
    """``(Q, C+1)`` logits -> ``(Q, G)`` foreground probabilities (softmax, background dropped).

    ``class_groups`` ``(C,)`` maps classes to labels; probabilities of classes sharing a label are summed
    (several conditions for one prompt after a keyframe refresh). Without it, labels are the classes.
    """
    probs = class_logits.float().softmax(-1)[:, :-1]
    if class_groups is None:
        return probs
    num_labels = int(class_groups.max()) + 1
    return probs.new_zeros(len(probs), num_labels).index_add_(1, class_groups.to(probs.device), probs)


def _mask_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary masks (logit > 0) and the mean sigmoid probability inside each."""
    masks = logits > 0
    inside = masks.flatten(1).float()
    scores = (logits.sigmoid().flatten(1) * inside).sum(1) / (inside.sum(1) + 1e-6)
    return masks, scores


#: Rounding room for :func:`_mask_score_bounds`: resizing in float may land a hair above its input's maximum.
BOUND_SLACK = 1e-6


def _mask_score_bounds(mask_logits: torch.Tensor) -> torch.Tensor:
    """``(N,)`` upper bounds of each query's mask score, from its decoder-resolution logits alone: bilinear
    resizing never exceeds its input's largest value, so the mean sigmoid inside the mask is at most the
    sigmoid of the largest logit. A pair below the threshold even so never needs its mask at image size
    (a random tiny model on a 720p frame: 39 of 177 candidate queries left)."""
    return mask_logits.flatten(1).amax(1).float().sigmoid()


def _query_pairs(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """X-SAM's top-k over (query, label) pairs with k = number of queries: scores, query and label indices."""
    num_queries, num_labels = probs.shape
    scores, flat = probs.flatten().topk(num_queries)
    return scores, torch.div(flat, num_labels, rounding_mode="floor"), flat % num_labels


def _prediction(masks, scores, labels, query_states, queries) -> XSamPrediction:
    order = torch.argsort(scores, descending=True)
    return XSamPrediction(
        masks=masks[order].cpu().numpy(),
        scores=scores[order].float().cpu().numpy(),
        labels=labels[order].long().cpu().numpy(),
        embeddings=None if query_states is None else query_states[queries[order]].float().cpu().numpy(),
    )


def instances(
    probs: torch.Tensor,
    mask_logits: torch.Tensor,
    query_states: torch.Tensor,
    geometry: ImageGeometry,
    threshold: float,
) -> XSamPrediction:
    """VGD and instance segmentation: every (query, label) pair whose ``class score * mask score >= threshold``.

    Empty masks are dropped. ``probs`` is ``(Q, G)`` from :func:`class_probabilities`.
    """
    scores, queries, labels = _query_pairs(probs)
    candidate = scores * _mask_score_bounds(mask_logits)[queries] >= threshold * (1 - BOUND_SLACK)
    scores, queries, labels = scores[candidate], queries[candidate], labels[candidate]
    unique_queries, inverse = queries.unique(return_inverse=True)
    masks, mask_scores = _mask_scores(mask_logits_to_image(mask_logits[unique_queries], geometry))
    final = scores * mask_scores[inverse]
    keep = (final >= threshold) & masks[inverse].flatten(1).any(1)
    return _prediction(masks[inverse][keep], final[keep], labels[keep], query_states, queries[keep])


def interactive(
    probs: torch.Tensor,
    mask_logits: torch.Tensor,
    query_states: torch.Tensor,
    geometry: ImageGeometry,
    prompt_mask: torch.Tensor,
    threshold: float,
) -> XSamPrediction:
    """One mask for one visual prompt: among pairs scoring >= ``threshold`` (or the best one), the mask whose
    bounding box has the highest IoU with the prompt's (``prompt_mask`` on the SAM canvas)."""
    scores, queries, labels = _query_pairs(probs)
    masks, mask_scores = _mask_scores(mask_logits_to_image(mask_logits[queries], geometry))
    final = scores * mask_scores
    kept = ((final >= threshold) | (final == final.max())).nonzero()[:, 0]
    prompt = canvas_to_image(prompt_mask[None], geometry, mode="nearest") > 0
    ious = _box_iou(_boxes(masks[kept]), _boxes(prompt))[:, 0]
    best = kept[ious.argmax()][None]
    return _prediction(masks[best], final[best], labels[best], query_states, queries[best])


def referring(
    probs: torch.Tensor, mask_logits: torch.Tensor, query_states: torch.Tensor, geometry: ImageGeometry
) -> XSamPrediction:
    """Referring/reasoning: the single query with the highest probability, its mask at sigmoid > 0.5."""
    score, query = probs[:, 0].max(0)
    masks = mask_logits_to_image(mask_logits[query][None], geometry).sigmoid() > 0.5
    return _prediction(masks, score[None], torch.zeros(1, dtype=torch.long), query_states, query[None])


def panoptic(
    probs: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, stuff: frozenset[int], threshold: float
) -> XSamPrediction:
    """Mask2Former's panoptic merge (``compute_segments``): stuff classes are fused into one segment each."""
    scores, labels = probs.max(-1)
    keep = scores > threshold  # ``remove_low_and_no_objects``; background is already dropped
    if not keep.any():
        return XSamPrediction.empty(geometry.image_size)
    mask_probs = mask_logits_to_image(mask_logits[keep], geometry).sigmoid()
    segmentation, segments = compute_segments(mask_probs, scores[keep], labels[keep], 0.5, 0.8, set(stuff))
    if not segments:
        return XSamPrediction.empty(geometry.image_size)
    masks = torch.stack([segmentation == segment["id"] for segment in segments])
    segment_scores = torch.tensor([segment["score"] for segment in segments])
    segment_labels = torch.tensor([segment["label_id"] for segment in segments])
    return _prediction(masks, segment_scores, segment_labels, None, None)


def semantic(
    probs: torch.Tensor, mask_logits: torch.Tensor, geometry: ImageGeometry, chunk: int = 25
) -> XSamPrediction:
    """Per-pixel argmax of ``sum_q p(class|q) * sigmoid(mask_q)`` (computed on the canvas, as X-SAM does).

    One region per class present; its score is the class's mean share of that sum over the region.
    """
    canvas = (geometry.canvas, geometry.canvas)
    semseg = probs.new_zeros(probs.shape[1], *canvas)
    for start in range(0, len(probs), chunk):
        logits = mask_logits[start : start + chunk, None].float()
        upsampled = F.interpolate(logits, size=canvas, mode="bilinear", align_corners=False)[:, 0]
        semseg += torch.einsum("qc,qhw->chw", probs[start : start + chunk], upsampled.sigmoid())
    semseg = canvas_to_image(semseg, geometry)
    label_map = semseg.argmax(0)
    labels = label_map.unique()
    masks = label_map[None] == labels[:, None, None]
    share = semseg / semseg.sum(0).clamp(min=1e-6)
    scores = torch.stack([share[c][m].mean() for c, m in zip(labels, masks, strict=True)])
    return _prediction(masks, scores, labels, None, None)


def _boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight ``(x0, y0, x1, y1)`` boxes (exclusive max, zeros when empty), as detectron2's ``BitMasks``."""
    boxes = masks.new_zeros(len(masks), 4, dtype=torch.float32)
    rows, cols = masks.any(2), masks.any(1)
    for i in range(len(masks)):
        ys, xs = rows[i].nonzero()[:, 0], cols[i].nonzero()[:, 0]
        if len(xs):
            boxes[i] = torch.tensor([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=torch.float32)
    return boxes


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    top_left = torch.max(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp(min=1e-6)
