"""Results in the formats benchmarks and tools read: YouTube-VIS, MOTS and MOTChallenge text, COCO.

Every writer reads the pipeline's own ``frames.jsonl`` records (:mod:`operators.exports.results`) and
nothing else, so an export is the same whichever run, resume or split wrote the file.
"""

from __future__ import annotations

from operators.exports.coco import write_coco
from operators.exports.mot import write_mot, write_mots
from operators.exports.results import ExportError, VideoResults, find_videos
from operators.exports.youtube_vis import write_youtube_vis

#: ``--format`` name -> writer; each takes the videos, an output path and the category override.
WRITERS = {"youtube-vis": write_youtube_vis, "coco": write_coco, "mots": write_mots, "mot": write_mot}

__all__ = ["WRITERS", "ExportError", "VideoResults", "find_videos"]
