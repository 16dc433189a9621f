"""Small composable annotators that draw :class:`~operators.records.Instances` on RGB frames (supervision style).

Each annotator's ``annotate(image, instances)`` returns a new ``uint8`` image and
leaves its input untouched; :func:`compose` chains them. A track's colour is its
entry in the DAVIS palette, so it is stable across frames and matches the pixel
colour of that track in the palette-PNG sink's masks. Overlapping objects are
drawn in ascending score order, so the most confident one ends on top, as in the
PNG masks.
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from operators.records import Instances

#: Highest palette slot a track can take; 0 is background and 255 is left for "void".
MAX_TRACK_SLOT = 254
VOID_SLOT = 255


def _davis_palette() -> np.ndarray:
    """The standard 256-colour PASCAL VOC / DAVIS palette: bits of the index interleaved into R, G, B, high bit first."""
    palette = np.zeros((256, 3), np.uint8)
    for index in range(256):
        code, rgb = index, [0, 0, 0]
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << bit
            code >>= 3
        palette[index] = rgb
    return palette


#: ``(256, 3)`` uint8 RGB palette; entry ``k`` is the colour of object ``k`` in DAVIS masks.
DAVIS_PALETTE = _davis_palette()


def track_slots(track_ids: np.ndarray) -> np.ndarray:
    """Palette slot per track id: ids 1..254 keep their value, larger ids wrap into 1..254, ids < 1 get 0.

    Ids below 1 (-1 means "not yet associated") have no identity to colour, so
    they map to the background slot.
    """
    track_ids = np.asarray(track_ids, np.int64)
    return np.where(track_ids > 0, (track_ids - 1) % MAX_TRACK_SLOT + 1, 0).astype(np.uint8)


def track_color(track_id: int) -> tuple[int, int, int]:
    """RGB drawing colour of a track; unassociated tracks (id < 1) get the palette's void colour."""
    slot = int(track_slots(np.array([track_id]))[0]) or VOID_SLOT
    r, g, b = DAVIS_PALETTE[slot]
    return int(r), int(g), int(b)


def paint_order(instances: Instances) -> np.ndarray:
    """Instance indices from least to most confident, so later (higher-score) drawings win overlaps."""
    return np.argsort(instances.scores, kind="stable")


class Annotator(Protocol):
    def annotate(self, image: np.ndarray, instances: Instances) -> np.ndarray: ...


class MaskAnnotator:
    """Fills each mask with its track colour, blended over the frame at ``opacity``."""

    def __init__(self, opacity: float = 0.5) -> None:
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity {opacity} is outside [0, 1]")
        self.opacity = opacity

    def annotate(self, image: np.ndarray, instances: Instances) -> np.ndarray:
        colored = image.copy()
        solid = np.empty_like(image)
        height, width = image.shape[:2]
        for i in paint_order(instances):
            # colored[mask] = colour, done by cv2: ~10x faster than numpy's boolean assignment of an RGB triple.
            cv2.rectangle(solid, (0, 0), (width, height), track_color(instances.track_ids[i]), thickness=-1)
            cv2.copyTo(solid, _as_uint8(instances.masks[i]), colored)
        # uint8 blend of the whole frame: unmasked pixels are identical in both inputs, so they stay as they were.
        return cv2.addWeighted(colored, self.opacity, image, 1.0 - self.opacity, 0.0)


class ContourAnnotator:
    """Outlines each mask (outer boundary and holes) in its track colour."""

    def __init__(self, thickness: int = 2) -> None:
        self.thickness = thickness

    def annotate(self, image: np.ndarray, instances: Instances) -> np.ndarray:
        out = image.copy()
        for i in paint_order(instances):
            contours, _ = cv2.findContours(_as_uint8(instances.masks[i]), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, track_color(instances.track_ids[i]), self.thickness)
        return out


class LabelAnnotator:
    """Writes ``#track p<prompt> score`` on a box of the track colour just above each mask's top-left corner."""

    def __init__(self, text_scale: float = 0.5, text_thickness: int = 1, padding: int = 3) -> None:
        self.text_scale = text_scale
        self.text_thickness = text_thickness
        self.padding = padding

    def annotate(self, image: np.ndarray, instances: Instances) -> np.ndarray:
        out = image.copy()
        height, width = out.shape[:2]
        boxes = instances.boxes_xyxy
        for i in paint_order(instances):
            x0, y0, x1, y1 = (int(v) for v in boxes[i])
            if x1 <= x0:  # empty mask: nothing to label
                continue
            text = f"#{instances.track_ids[i]} p{instances.prompt_ids[i]} {instances.scores[i]:.2f}"
            (text_w, text_h), baseline = cv2.getTextSize(
                text, cv2.FONT_HERSHEY_SIMPLEX, self.text_scale, self.text_thickness
            )
            box_w, box_h = text_w + 2 * self.padding, text_h + baseline + 2 * self.padding
            left = min(max(x0, 0), max(width - box_w, 0))
            top = y0 - box_h if y0 >= box_h else y0  # above the object, or inside it at the frame's top edge
            color = track_color(instances.track_ids[i])
            cv2.rectangle(out, (left, top), (left + box_w - 1, top + box_h - 1), color, thickness=-1)
            cv2.putText(
                out,
                text,
                (left + self.padding, top + self.padding + text_h),
                cv2.FONT_HERSHEY_SIMPLEX,
                self.text_scale,
                _readable_text_color(color),
                self.text_thickness,
                cv2.LINE_AA,
            )
        return out


class _Composed:
    def __init__(self, annotators: tuple[Annotator, ...]) -> None:
        self.annotators = annotators

    def annotate(self, image: np.ndarray, instances: Instances) -> np.ndarray:
        for annotator in self.annotators:
            image = annotator.annotate(image, instances)
        return image


def compose(*annotators: Annotator) -> Annotator:
    """One annotator that applies ``annotators`` in order (later ones draw on top)."""
    if not annotators:
        raise ValueError("compose needs at least one annotator")
    return _Composed(annotators)


def _as_uint8(mask: np.ndarray) -> np.ndarray:
    """A bool mask as the 0/1 uint8 image cv2 wants, without copying it (bool and uint8 share a layout)."""
    return np.ascontiguousarray(mask).view(np.uint8)


def _readable_text_color(background: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 128 else (255, 255, 255)


def default_annotator() -> Annotator:
    """Translucent masks, then outlines, then labels on top."""
    return compose(MaskAnnotator(opacity=0.5), ContourAnnotator(), LabelAnnotator())
