"""Instances as the page draws them: a transparent PNG of the masks in their track colours, and the objects'
figures for the labels and tables."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from operators.annotate import DAVIS_PALETTE, track_color
from operators.records import Instances
from operators.sinks.palette_png import label_map

#: Opacity of a mask over the frame (0-255), as the annotated MP4's 0.5.
MASK_ALPHA = 128


def overlay_png(instances: Instances) -> str:
    """A ``data:image/png`` URL of an RGBA image of the frame's size: each mask in its track's DAVIS colour
    (the annotated MP4's and the PNG masks' colours), transparent elsewhere."""
    labels = label_map(instances)
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    rgba[..., :3] = DAVIS_PALETTE[labels]
    rgba[..., 3] = np.where(labels > 0, MASK_ALPHA, 0)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def page_objects(instances: Instances) -> list[dict]:
    """The objects of the frame records (``track_id``, ``prompt_id``, ``score``, COCO ``bbox``, ``area``),
    without the RLE the overlay already shows, each with its colour for the page's labels."""
    objects = []
    for entry in instances.object_dicts():
        del entry["rle"]
        objects.append({**entry, "color": "#%02x%02x%02x" % track_color(entry["track_id"])})
    return objects
