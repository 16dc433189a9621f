"""DAVIS-layout data sets the tests generate: JPEG frames and indexed annotation PNGs of synthetic clips.

``ROOT/JPEGImages/480p/<seq>/00000.jpg`` and ``ROOT/Annotations/480p/<seq>/00000.png`` (pixel = object index,
DAVIS palette), rendered from :class:`bench.clips.Scene`, so the ground truth is exact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from bench.clips import ClipSpec, Scene
from operators.annotate import DAVIS_PALETTE


def write_annotation(path: Path, masks: Mapping[int, np.ndarray]) -> None:
    """An indexed PNG: pixel = the index of the object covering it, 0 elsewhere."""
    labels = np.zeros(next(iter(masks.values())).shape, np.uint8)
    for index, mask in masks.items():
        labels[mask] = index
    image = Image.fromarray(labels, mode="P")
    image.putpalette(DAVIS_PALETTE.tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_sequence(root: Path, name: str, spec: ClipSpec, resolution: str = "480p",
                   annotated: str = "all") -> list[dict[int, np.ndarray]]:
    """Frames and annotations of one sequence; returns the ground truth per frame.

    ``annotated``: ``"all"`` frames (train/val), ``"first"`` only (DAVIS test-dev) or ``"none"``.
    """
    scene = Scene(spec)
    images = root / "JPEGImages" / resolution / name
    annotations = root / "Annotations" / resolution / name
    images.mkdir(parents=True, exist_ok=True)
    truth = []
    for t in range(spec.num_frames):
        frame = scene.render(t)
        Image.fromarray(frame.rgb).save(images / f"{t:05d}.jpg", quality=95)
        if annotated == "all" or (annotated == "first" and t == 0):
            write_annotation(annotations / f"{t:05d}.png", frame.masks)
        truth.append(frame.masks)
    return truth
