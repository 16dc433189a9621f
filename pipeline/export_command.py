"""``xsam-pipeline export``: a run's ``frames.jsonl`` as YouTube-VIS, COCO, MOTS or MOT results."""

from __future__ import annotations

import argparse
from pathlib import Path

from operators.errors import PipelineError
from operators.exports import WRITERS, find_videos


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export", help="convert a run's frames.jsonl to YouTube-VIS, COCO, MOTS or MOTChallenge results")
    parser.add_argument("results", type=Path, help="one video's folder (holding frames.jsonl) or a job's --out "
                                                   "folder (every subfolder holding one)")
    parser.add_argument("--format", required=True, choices=tuple(WRITERS),
                        help="youtube-vis: one JSON for all videos, an entry per track; coco: one JSON, an image per "
                             "frame; mots: MOTS mask text; mot: MOTChallenge box text (mots and mot: one file per "
                             "video, so OUTPUT is a folder when there are several)")
    parser.add_argument("--output", required=True, type=Path, help="the file (or folder, see --format) to write")
    parser.add_argument("--category-id", type=int, metavar="ID",
                        help="the category every object gets (default: its prompt id)")
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.category_id is not None and args.category_id < 0:
        raise PipelineError("--category-id", f"{args.category_id} is negative")
    videos = find_videos(args.results)
    written = WRITERS[args.format](videos, args.output, args.category_id)
    for video in videos:
        print(f"video_id {video.video_id}: {video.name}")
    print(f"wrote {', '.join(map(str, written))}")
    return 0
