"""Instances as Roboflow supervision's ``sv.Detections`` and back (the ``supervision`` extra).

The fields map one to one: masks -> ``mask``, scores -> ``confidence``, prompt ids -> ``class_id``, track ids
-> ``tracker_id`` (``None`` while no instance has one; -1 in Instances), embeddings -> ``data["embedding"]``.
supervision's ``xyxy`` max is inclusive (the last pixel column and row inside the mask) where
``Instances.boxes_xyxy`` is exclusive, so the boxes differ by one at the max.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from operators.records import Instances

if TYPE_CHECKING:
    import supervision as sv

EMBEDDING_KEY = "embedding"


def _supervision():
    try:
        import supervision
    except ImportError as exc:
        raise ImportError("Instances.to_supervision needs supervision: pip install 'xsam-pipeline[supervision]'") \
            from exc
    return supervision


def to_detections(instances: Instances) -> "sv.Detections":
    sv = _supervision()
    xyxy = instances.boxes_xyxy
    present = instances.areas > 0
    xyxy[present, 2:] -= 1  # exclusive max -> the inclusive max supervision's mask_to_xyxy gives
    tracked = (instances.track_ids >= 0).any()
    data = {} if instances.embeddings is None else {EMBEDDING_KEY: instances.embeddings}
    return sv.Detections(xyxy=xyxy, mask=instances.masks, confidence=instances.scores,
                         class_id=instances.prompt_ids, tracker_id=instances.track_ids if tracked else None,
                         data=data)


def _box_masks(xyxy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Filled boxes (inclusive max, as supervision's) for detections that carry no masks."""
    masks = np.zeros((len(xyxy), height, width), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, np.rint(xyxy).astype(np.int64)):
        mask[max(y0, 0) : max(y1 + 1, 0), max(x0, 0) : max(x1 + 1, 0)] = True
    return masks


def from_detections(detections: Any, frame_size: tuple[int, int] | None = None) -> Instances:
    """Instances from an ``sv.Detections``; ``frame_size`` (H, W) is needed when it has no masks (its boxes
    become the masks) and is checked against the masks when given."""
    n = len(detections)
    if detections.mask is not None:
        mask = detections.mask
        masks = np.asarray(mask.to_dense() if hasattr(mask, "to_dense") else mask, bool)  # a CompactMask too
        if masks.ndim != 3 or len(masks) != n:
            raise ValueError(f"detections' masks are {masks.shape}, expected ({n}, H, W)")
        if frame_size is not None and masks.shape[1:] != tuple(frame_size):
            raise ValueError(f"detections' masks are {masks.shape[2]}x{masks.shape[1]}, the frame is "
                             f"{frame_size[1]}x{frame_size[0]}")
    elif frame_size is not None:
        masks = _box_masks(np.asarray(detections.xyxy, np.float64).reshape(n, 4), *frame_size)
    else:
        raise ValueError("detections without masks need frame_size=(height, width) to become masks")

    def column(values: Any, dtype: type, missing: float) -> np.ndarray:
        return np.full(n, missing, dtype) if values is None else np.asarray(values, dtype).reshape(n)

    embeddings = detections.data.get(EMBEDDING_KEY)
    return Instances(masks, column(detections.confidence, np.float32, 1.0), column(detections.class_id, np.int32, 0),
                     column(detections.tracker_id, np.int64, -1),
                     None if embeddings is None else np.asarray(embeddings, np.float32))
