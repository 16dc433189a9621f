"""COCO-style JSON, one image per frame: ``videos``, ``images``, ``annotations`` and ``categories``.

``images`` carry ``video_id``, ``frame_index``, ``pts``, ``height`` and ``width``; ``annotations`` carry
``image_id``, ``video_id``, ``track_id``, ``category_id``, ``segmentation`` (COCO RLE, ``counts`` a string),
``bbox`` ``[x, y, width, height]``, ``area``, ``score`` and ``iscrowd`` 0, so ``pycocotools.coco.COCO``
loads the file and ``annToMask`` gives each mask back. Ids count from 1 across the whole file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from operators.exports.results import VideoResults, output_file


def write_coco(videos: Sequence[VideoResults], output: Path, category_id: int | None = None) -> list[Path]:
    """One file for all ``videos``; the category of an object is its prompt id unless ``category_id`` is given."""
    dataset: dict[str, list] = {"videos": [], "images": [], "annotations": [], "categories": []}
    categories: set[int] = set()
    for video in videos:
        frames = 0
        for record in video.records():
            frames += 1
            image_id = len(dataset["images"]) + 1
            dataset["images"].append({"id": image_id, "video_id": video.video_id, "frame_index": record.frame_index,
                                      "pts": record.pts, "height": record.height, "width": record.width})
            for entry in record.instances.object_dicts():
                category = entry["prompt_id"] if category_id is None else category_id
                categories.add(category)
                dataset["annotations"].append({
                    "id": len(dataset["annotations"]) + 1, "image_id": image_id, "video_id": video.video_id,
                    "track_id": entry["track_id"], "category_id": category, "segmentation": entry["rle"],
                    "bbox": entry["bbox"], "area": entry["area"], "score": entry["score"], "iscrowd": 0})
        first = dataset["images"][-frames] if frames else {"height": 0, "width": 0}
        dataset["videos"].append({"id": video.video_id, "name": video.name, "length": frames,
                                  "height": first["height"], "width": first["width"]})
    dataset["categories"] = [{"id": c, "name": f"prompt {c}" if category_id is None else f"category {c}"}
                             for c in sorted(categories)]
    with output_file(output) as file:
        json.dump(dataset, file, separators=(",", ":"))
    return [output]
