"""YouTube-VIS results JSON: a list with one entry per track.

Each entry is ``{"video_id", "category_id", "score", "segmentations"}``; ``segmentations`` has one item per
frame of the video, the track's COCO RLE (``counts`` a string) or ``null`` where it is absent, and ``score``
is the track's mean score over the frames it is in. The category is the track's prompt id unless the export
names one for every track.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from operators.exports.results import VideoResults, output_file


@dataclass
class _Track:
    category_id: int
    segmentations: dict[int, dict] = field(default_factory=dict)  # frame index -> RLE
    score_sum: float = 0.0


def video_entries(video: VideoResults, category_id: int | None = None) -> list[dict]:
    """The YouTube-VIS entries of one video's tracks, in track id order."""
    tracks: dict[int, _Track] = {}
    frames = 0
    for record in video.records():
        frames += 1
        for entry in record.instances.object_dicts():
            track = tracks.setdefault(entry["track_id"], _Track(
                entry["prompt_id"] if category_id is None else category_id))
            track.segmentations[record.frame_index] = entry["rle"]
            track.score_sum += entry["score"]
    return [{"video_id": video.video_id, "category_id": track.category_id,
             "score": round(track.score_sum / len(track.segmentations), 4),
             "segmentations": [track.segmentations.get(i) for i in range(frames)]}
            for _, track in sorted(tracks.items())]


def write_youtube_vis(videos: Sequence[VideoResults], output: Path, category_id: int | None = None) -> list[Path]:
    """One results file for all ``videos`` (their ``video_id`` tells them apart)."""
    entries = [entry for video in videos for entry in video_entries(video, category_id)]
    with output_file(output) as file:
        json.dump(entries, file, separators=(",", ":"))
    return [output]
