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

from bench.harness import SECTIONS, BenchConfig, format_table, run, summary_rows

ROOT = Path(__file__).resolve().parent.parent
MD_PATH = ROOT / "BENCHMARKS.md"

MD_HEADER = """# Benchmarks

Figures from `python -m bench` (issue #6). The blocks between `<!-- bench:... -->` markers are
rewritten by `python -m bench --write-md`; each block names the command that produced it. The
machines these run on are shared, so absolute figures are noisy: compare ratios measured in the
same run (every ratio below is).
"""

DEFINITIONS = """## Definitions

- **decode ceiling**: `pipeline.sources.open_video` alone on the benchmark clips, frames/s; one decoder
  thread (the cost per core) and FFmpeg's automatic thread count (what `StreamWorker` uses). Keyframes-only
  decode (`keyframes_only=True`) reports keyframes/s and source frames covered/s.
- **segmenter alone** (one OpenCV thread, as in the actors, at the clip size): keyframe step = `segment`
  + `refresh`, what a keyframe costs (`encode_prompts` runs once per prompt and is reported apart);
  propagation step = `FlowPropagator.flow`
  + `warp`. **segmenter fps** at keyframe interval K = `1000 / (seg_ms / K + prop_ms * (K - 1) / K)`.
  **operator fps** = what a stream really runs per frame: flow + warp on every frame (keyframes too, for
  association), the keyframe step / K, the scene-cut signature and the record encoding
  (RLE + JSON); decode excluded.
- **stream breakdown**: every clip through `run_stream` on one thread (keyframes in-process, the sink's
  record encoding in the emit callback), each step timed by wrapping its functions. The capacity below
  counts decode, `segment` + `refresh` on keyframes and flow + warp on propagated frames; it does not
  count the flow and warp to keyframes, association, the scene-cut signature, flow support or the
  record encoding, which every stream also runs. counted / all is the best efficiency one stream on
  one thread could reach. Decode runs on one FFmpeg thread, as each of several streams decodes. When the
  pipeline section ran too, the N-stream run's wall efficiency is split into three factors: this
  one-thread ceiling x (steady efficiency / ceiling: the streams in parallel on shared cores against one
  thread alone) x (wall / steady: start-up and tail).
- **pipeline end to end**: N videos in one `run_job(JobConfig(..., sinks=["jsonl"], progress=False))` on
  Ray, archive mode, `parallel` unset as `xsam-pipeline run` leaves it: min(N, cluster CPUs) stream workers,
  each taking the next video when one ends. Ray is started and warmed with a tiny job before timing; the
  timed region is the `run_job` call (**wall**, includes the per-job actor start-up: the segmenter pool
  unless segmentation is inline, the stream actors). **steady** = frames / the stream workers' busy time
  (the longest `StreamWorker.run`, or with fewer workers than videos the videos' total seconds / workers;
  excludes the stream actors' start-up, still includes waiting for a segmenter actor to start; the gap to
  wall is start-up plus the tail, where fewer videos than cores are left). **Capacity**:
  1 stream `min(decode_fps, segmenter_fps)`; N streams `min(N, cores) / (1/decode_fps + 1/segmenter_fps)`
  (each frame costs one decode plus the segmenter's amortised per-frame cost on one core; the cores work in
  parallel). **segmenter fps** here is the segmenter doing the same work as the run: each video's keyframe
  and propagation steps timed on that video's own frames, weighted by the keyframes the run made (its
  policy adds re-anchoring keyframes where flow is unreliable, costed at the **re-anchor step**: `segment`
  searching only around the last frame's objects, no refresh); the same at the fixed interval K alone is reported
  beside it. decode (one thread) and the step costs are measured right before and right after each timed
  run and averaged. **efficiency** = e2e fps / capacity. Contention-proof companion: **CPU efficiency** = ideal
  CPU ms per frame (decode + segmenter formula, in CPU time) / the CPU ms per frame all our processes
  (driver, workers, raylet/GCS/agents; psutil) used during the run; "other users" = the machine's busy CPU
  (`/proc/stat`) minus ours, in cores.
- **naive baseline**: one process, no Ray: decode every frame with PyAV, `encode_prompts` on frame 0, the
  default segmenter's `segment` on every frame, library threading at its defaults. **speedup** = our fps /
  naive fps on the same clips. J&F (`operators.metrics.evaluate_clip`) on the clips' ground truth: ours
  with `matching="track"`; naive with `matching="frame"` (per-frame Hungarian, generous to it) and with
  track ids from the project's `TrackAssigner` on consecutive frames (`matching="track"`). "ours
  in-process" runs the same operators with `run_stream` + `local_submit` in one process (no Ray).
- **memory vs video length**: one stream through the pipeline on a synthetic clip looped losslessly (packets
  remuxed with shifted timestamps) to each length. A thread samples (psutil) the RSS of the driver and
  every Ray worker process of this cluster, and the plasma store's bytes in use (every 0.5 s). **Peak RSS**
  = the largest sum over the run of the driver and the pipeline's actors (`StreamWorker`,
  `SegmenterWorker`); in parentheses the same with idle pooled workers and Ray's own processes (raylet,
  GCS, dashboard, agents) added. The RSS slope is a least-squares fit over 25-90 % of the longest run.
"""


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(match[1]), int(match[2])


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
    parser.add_argument("--keyframe-every", type=int, help="keyframe interval K (default 10)")
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
    for name in ("frames", "streams", "keyframe_every", "micro_frames", "mem_lengths", "loop_unit", "cache_dir", "work_dir"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.keep_outputs:
        overrides["keep_outputs"] = True
    return BenchConfig.quick_config(**overrides) if args.quick else BenchConfig(**overrides)


# --------------------------------------------------------------------------- BENCHMARKS.md


def _block(name: str, body: str) -> str:
    return f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->"


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replace each named marker block in ``text`` (appending blocks it lacks, in the given order)."""
    for name, body in blocks.items():
        block = _block(name, body)
        pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
    return text


def markdown_blocks(result: dict[str, Any], command: str) -> dict[str, str]:
    m = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    blocks = {
        "machine": (
            "## Machine\n\n"
            f"- {m['cores']} cores, {m['cpu_model']}, {m['ram_gb']} GB RAM, Python {m['python']}\n"
            f"- {versions}\n"
            f"- run {m['date']} (`{command}`, {result.get('elapsed_s')} s); load average "
            f"{m['load_avg_start']} at the start, {m.get('load_avg_end')} at the end: **shared machine, noisy figures**\n"
        ),
        "definitions": DEFINITIONS,
    }
    titles = {
        "decode": "Decode ceiling", "segmenter": "Segmenter alone",
        "breakdown": "One stream's frame, step by step (what the capacity counts and what it does not)",
        "xsam": "X-SAM tiny, full vs cached path (bench.xsam_bench; full-size: `python -m bench.xsam_bench`)",
        "pipeline": "Pipeline end to end (Ray, archive mode)", "naive": "Naive baseline",
        "memory": "Memory vs video length",
    }
    for name, rows in summary_rows(result).items():
        lines = [f"## {titles[name]}", "", f"`{command}`, {m['date']}", "", "| metric | value |", "|---|---|"]
        lines += [f"| {metric} | {value.replace('|', '/')} |" for metric, value in rows]
        blocks[name] = "\n".join(lines) + "\n"
    return blocks


def write_markdown(path: Path, result: dict[str, Any], command: str) -> None:
    text = path.read_text() if path.exists() else MD_HEADER
    path.write_text(replace_blocks(text, markdown_blocks(result, command)).rstrip() + "\n")


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
