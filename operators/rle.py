"""COCO run-length encoding through pycocotools, with its Fortran-order and bytes traps handled once."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as coco_mask


def encode(masks: np.ndarray) -> list[dict]:
    """Encode ``(N, H, W)`` boolean masks to JSON-ready COCO RLE dicts (``counts`` as str)."""
    if len(masks) == 0:
        return []
    fortran = np.asfortranarray(np.moveaxis(masks.astype(np.uint8), 0, -1))
    encoded = coco_mask.encode(fortran)
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in encoded]


def decode(rles: list[dict]) -> np.ndarray:
    """Decode JSON COCO RLE dicts back to ``(N, H, W)`` boolean masks."""
    if not rles:
        return np.zeros((0, 0, 0), bool)
    objs = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
    return np.moveaxis(coco_mask.decode(objs), -1, 0).astype(bool)
