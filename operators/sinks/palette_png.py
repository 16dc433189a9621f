"""DAVIS-style indexed PNG masks, ``<out_dir>/<stream_id>/masks/%06d.png``: the format VOS evaluation tools read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from operators.annotate import DAVIS_PALETTE, paint_order, track_slots
from operators.records import FrameRecord, Instances
from operators.output_files import open_output, output_errors, prepare_out_dir, stream_dir
from operators.sinks.base import StreamInfo

_PALETTE_BYTES = DAVIS_PALETTE.tobytes()


def paint_values(instances: Instances, values: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
    """``(H, W)`` map of each instance's value over its mask, 0 elsewhere and where the value is 0; the higher
    score wins overlaps."""
    labels = np.zeros(instances.shape, dtype)
    for i in paint_order(instances):
        if values[i]:
            labels[instances.masks[i]] = values[i]
    return labels


def label_map(instances: Instances) -> np.ndarray:
    """``(H, W)`` uint8 map: 0 = background, else the track's palette slot; the higher score wins overlaps.

    Slots are :func:`~operators.annotate.track_slots`: track ids 1..254 as they
    are, larger ids wrapped into 1..254 (so id 300 becomes 46 and may share a
    value with id 46), 255 never used. Instances without a track id (< 1) are
    left as background.
    """
    return paint_values(instances, track_slots(instances.track_ids))


def mask_path(masks_dir: Path, frame_index: int) -> Path:
    return masks_dir / f"{frame_index:06d}.png"


def save_labels(labels: np.ndarray, path: Path) -> None:
    """Write a uint8 label map as a DAVIS-palette PNG."""
    image = Image.fromarray(labels)
    image.putpalette(_PALETTE_BYTES)
    with output_errors(path), open_output(path) as file:
        image.save(file, format="PNG", compress_level=1)


class PalettePngSink:
    """Writes one palette ("P" mode) PNG per frame with the DAVIS palette.

    Resume needs nothing special: every frame's file is rewritten when its
    frame is written again, so ``start_frame`` is accepted and ignored.
    """

    needs_image = False

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = prepare_out_dir(out_dir)
        self.masks_dir: Path | None = None
        self._written = 0

    def open(self, stream: StreamInfo, start_frame: int = 0) -> None:
        self.masks_dir = stream_dir(self.out_dir, stream.stream_id, "masks")
        self._written = 0

    def write(self, record: FrameRecord) -> None:
        save_labels(label_map(record.instances), mask_path(self.masks_dir, record.frame_index))
        self._written += 1

    def close(self) -> dict:
        return {"sink": "png", "path": str(self.masks_dir), "frames": self._written}
