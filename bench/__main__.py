"""``python -m bench``: run the benchmark sections, print JSON (stdout) and a table (stderr).

    python -m bench                       # every section, default sizes (< 10 min on 2 cores)
    python -m bench --quick               # short clips (< 1 min)
    python -m bench --only decode segmenter --json out.json
    python -m bench --write-md            # also rewrite this run's sections of BENCHMARKS.md

Sizes and lengths are options (``--size``, ``--frames``, ``--streams``, ``--mem-lengths`` ...); ``--quick``
changes the defaults of the ones not given.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

from bench.config import BenchConfig
from bench.report import format_table, write_markdown
from bench.runner import run
from bench.sections import SECTIONS

MD_PATH = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"

def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(match[1]), int(match[2])


def _sizes(text: str) -> tuple[tuple[int, int], ...]:
    sizes = tuple(_size(item) for item in text.split(",") if item)
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected comma-separated WIDTHxHEIGHT sizes, got {text!r}")
    return sizes


def _lengths(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated frame counts, got {text!r}") from None
    if not values or min(values) < 2:
        raise argparse.ArgumentTypeError("lengths must be >= 2 frames")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short clips and lengths (< 1 minute)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="NAME", help=f"sections to run: {', '.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON result here")
    parser.add_argument("--write-md", nargs="?", const=MD_PATH, type=Path, metavar="PATH",
                        help=f"rewrite this run's sections of a markdown file (default {MD_PATH.name})")
    parser.add_argument("--size", type=_size, metavar="WxH", help="clip size (default 1280x720; quick 320x240)")
    parser.add_argument("--frames", type=int, help="frames per clip (default 450; quick 60)")
    parser.add_argument("--streams", type=int, help="N for the N-stream run (default 4)")
    parser.add_argument("--split-frames", type=int, help="frames of the split section's long video (default 1800; quick 300)")
    parser.add_argument("--sweep-sizes", type=_sizes, metavar="WxH,WxH,...",
                        help="the sweep section's sizes (default 320x240,640x480,1280x720,1920x1080; quick the first two)")
    parser.add_argument("--sweep-frames", type=int, help="frames per sweep clip (default 30)")
    parser.add_argument("--keyframe-every", type=int, help="keyframe interval K (default 10; the sweep keeps the pipeline's default)")
    parser.add_argument("--live-feeds", type=int, metavar="N", help="the live section's feeds (default 2)")
    parser.add_argument("--live-seconds", type=float, metavar="S",
                        help="the live section's measured seconds per runtime (default 8; quick 3)")
    parser.add_argument("--live-load", type=int, metavar="N",
                        help="N busy processes beside the live feeds, as another user of the machine (default 0)")
    parser.add_argument("--micro-frames", type=int, help="frames timed per segmenter step (default 60; quick 20)")
    parser.add_argument("--mem-lengths", type=_lengths, metavar="N,N,...", help="memory section lengths (default 1000,10000,30000; quick 200,600)")
    parser.add_argument("--mem-size", type=_size, metavar="WxH", help="memory section clip size (default 160x120)")
    parser.add_argument("--loop-unit", type=int, help="frames of the clip the memory section loops (default 250; quick 100)")
    parser.add_argument("--cache-dir", help="where looped clips are cached")
    parser.add_argument("--work-dir", help="where pipeline outputs go (default: a temporary folder)")
    parser.add_argument("--keep-outputs", action="store_true", help="keep the work folder")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    overrides: dict[str, Any] = {}
    if args.size:
        overrides["width"], overrides["height"] = args.size
    if args.mem_size:
        overrides["mem_width"], overrides["mem_height"] = args.mem_size
    for name in ("frames", "streams", "split_frames", "sweep_sizes", "sweep_frames", "keyframe_every", "live_feeds",
                 "live_seconds", "live_load", "micro_frames", "mem_lengths", "loop_unit", "cache_dir", "work_dir"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.keep_outputs:
        overrides["keep_outputs"] = True
    return BenchConfig.quick_config(**overrides) if args.quick else BenchConfig(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    result = run(config_from_args(args), args.only)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    result["command"] = command.strip()
    text = json.dumps(result, indent=1)
    print(text)
    print(format_table(result), file=sys.stderr)
    if args.json:
        args.json.write_text(text + "\n")
    if args.write_md:
        write_markdown(args.write_md, result, result["command"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
