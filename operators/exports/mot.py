"""MOTChallenge text: MOTS masks (``frame id class_id height width rle``) and MOT boxes, one file per video.

Frames count from 1, as MOTChallenge's sequences do. MOTS requires the masks of a frame to be disjoint
(its evaluators refuse overlapping ones), so a pixel two objects claim goes to the higher-scoring one; an
object left with no pixel is not written. MOT box lines are ``frame,id,x,y,width,height,score,-1,-1,-1``
with the mask's tight box in 0-based pixels. One video exports to ``output`` itself; several to
``output/<video>.txt`` each, the layout MOTChallenge's evaluation (TrackEval) reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from operators import rle
from operators.exports.results import VideoResults, output_file
from operators.records import FrameRecord, Instances


def disjoint(instances: Instances) -> Instances:
    """The instances with each pixel kept only by the highest-scoring mask that has it."""
    masks = instances.masks.copy()
    taken = np.zeros(instances.shape, bool)
    for i in np.argsort(-instances.scores, kind="stable"):
        masks[i] &= ~taken
        taken |= instances.masks[i]
    return Instances(masks, instances.scores, instances.prompt_ids, instances.track_ids, instances.embeddings)


def mots_lines(record: FrameRecord, category_id: int | None = None) -> Iterator[str]:
    instances = disjoint(record.instances)
    kept = instances[instances.areas > 0]
    for i, encoded in enumerate(rle.encode(kept.masks, kept.boxes_xyxy)):
        category = int(kept.prompt_ids[i]) if category_id is None else category_id
        yield (f"{record.frame_index + 1} {int(kept.track_ids[i])} {category} {record.height} {record.width} "
               f"{encoded['counts']}\n")


def mot_lines(record: FrameRecord, category_id: int | None = None) -> Iterator[str]:
    for entry in record.instances.object_dicts():
        if entry["area"]:
            x, y, width, height = (int(v) for v in entry["bbox"])
            yield f"{record.frame_index + 1},{entry['track_id']},{x},{y},{width},{height},{entry['score']:g},-1,-1,-1\n"


def _write_per_video(lines: Callable[[FrameRecord, int | None], Iterator[str]], videos: Sequence[VideoResults],
                     output: Path, category_id: int | None) -> list[Path]:
    paths = [output] if len(videos) == 1 else [output / f"{video.name}.txt" for video in videos]
    for video, path in zip(videos, paths):
        with output_file(path) as file:
            for record in video.records():
                file.writelines(lines(record, category_id))
    return paths


def write_mots(videos: Sequence[VideoResults], output: Path, category_id: int | None = None) -> list[Path]:
    return _write_per_video(mots_lines, videos, output, category_id)


def write_mot(videos: Sequence[VideoResults], output: Path, category_id: int | None = None) -> list[Path]:
    return _write_per_video(mot_lines, videos, output, category_id)
