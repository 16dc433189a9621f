"""``xsam-pipeline live``: its options, the per-stream settings they give, and the command itself."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from operators.errors import PipelineError
from operators.keyframes import KeyframeConfig
from operators.records import Prompt
from operators.segmenters import check_checkpoint, check_segmenter
from pipeline.control.commands import DEFAULT_SCHEMES, KNOWN_SCHEMES, CommandHandler, SourcePolicy, derive_stream_id
from pipeline.live.metrics import serve_metrics
from pipeline.live.stream import LiveStreamSpec
from pipeline.sources import ReconnectPolicy

log = logging.getLogger("pipeline.live")


def add_live_parser(commands: "argparse._SubParsersAction") -> None:
    """Register ``xsam-pipeline live URL [URL...]``."""
    live = commands.add_parser("live", help="segment live feeds (rtsp/udp/tcp/http URLs, /dev/videoN) until interrupted")
    live.add_argument("sources", nargs="*",
                      help="live URLs or /dev/videoN devices (files are read once as a feed); none: an empty service "
                           "that --api-port or --control adds streams to")
    live.add_argument("--prompt", action="append", metavar="SPEC", default=[],
                      help="point:X,Y | box:X0,Y0,X1,Y1 | scribble:PNG | mask:PNG; repeatable (applies to every "
                           "stream given here; optional with --api-port or --control, which add prompts later)")
    live.add_argument("--out", type=Path, required=True, help="output folder (file sinks and live_summary.json)")
    live.add_argument("--sink", action="append", metavar="SINKS",
                      help="jsonl, png, mp4, redis://HOST:PORT/DB?stream=NAME[&maxlen=N] or mqtt://HOST:PORT/TOPIC; "
                           "repeatable or comma-separated (default jsonl)")
    live.add_argument("--segmenter", default="default",
                      help="default (weight-free), xsam (with --checkpoint) or package.module:Class")
    live.add_argument("--checkpoint", help="X-SAM checkpoint folder, .bin or hub id (with --segmenter xsam)")
    live.add_argument("--keyframe-every", type=int, default=10, metavar="K",
                      help="run the full segmenter every K frames, propagate in between (default 10)")
    live.add_argument("--ill-posed-every", type=int, default=3, metavar="N",
                      help="re-anchor a tracked object that is flat or striped (optical flow cannot measure its "
                           "motion) every N frames, searching only around the tracked objects; 0 turns this off "
                           "(default 3)")
    live.add_argument("--latency-budget", type=float, default=0.5, metavar="S",
                      help="drop frames older than S seconds when newer ones wait (default 0.5)")
    live.add_argument("--queue-size", type=int, default=4, help="decoded frames waiting per stream (default 4)")
    live.add_argument("--mode", choices=("live", "archive"), default="live", help="archive: never drop frames")
    live.add_argument("--runtime", choices=("ray", "in-process"), default="ray",
                      help="ray: each feed in a stream actor over the cluster's nodes, restarted on another node if "
                           "it dies (default; starts a local Ray unless --address); in-process: every feed on "
                           "threads of this process")
    live.add_argument("--address", help="join this Ray cluster instead of starting a local one (--runtime ray)")
    live.add_argument("--segmenter-placement", choices=("auto", "pool", "inline"), default="auto",
                      help="segmenter actors shared by every feed (pool) or a segmenter in each stream actor "
                           "(inline); default auto: inline for the weight-free default segmenter without GPUs")
    live.add_argument("--snapshot-every", type=float, default=5.0, metavar="S",
                      help="save each feed's prompt memory and tracks every S seconds in OUT/<stream>/, where a "
                           "restarted stream actor continues from (default 5; 0: never)")
    live.add_argument("--timeout", type=float, default=10.0, help="open/read timeout in seconds (default 10)")
    live.add_argument("--rtsp-transport", choices=("tcp", "udp"), default="tcp")
    live.add_argument("--max-reconnects", type=int, default=None,
                      help="give a stream up after N failed reconnects in a row (default: never)")
    live.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: until interrupted)")
    live.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on ADDRESS:PORT")
    live.add_argument("--metrics-address", default="127.0.0.1",
                      help="the address the metrics are served on (default 127.0.0.1; 0.0.0.0 for a scraper elsewhere)")
    live.add_argument("--control", metavar="URL", default=None,
                      help="read control commands from a Redis stream: redis://HOST:PORT/DB?stream=NAME (docs/live.md)")
    live.add_argument("--api-port", type=int, default=None, metavar="P",
                      help="serve the HTTP control API on ADDRESS:P (docs/live.md, HTTP API)")
    live.add_argument("--api-address", default="127.0.0.1",
                      help="the address the HTTP API is served on (default 127.0.0.1: it has no authentication)")
    live.add_argument("--allow-schemes", default=",".join(DEFAULT_SCHEMES), metavar="LIST",
                      help="URL schemes a stream added by --api-port or --control may use, comma-separated, of "
                           f"{', '.join(KNOWN_SCHEMES)} (device: /dev/videoN) (default {','.join(DEFAULT_SCHEMES)}: "
                           "http(s) would let a client make the service fetch any URL it can reach)")
    live.add_argument("--allow-files", action="store_true",
                      help="let --api-port and --control add local files as streams and read prompt images by path")
    live.set_defaults(handler=run_live_command)


def live_stream_defaults(args: argparse.Namespace) -> dict:
    """The per-stream settings of ``live``'s options; ValueError names a bad one."""
    keyframes = KeyframeConfig(every=args.keyframe_every, ill_posed_every=args.ill_posed_every)
    if args.snapshot_every < 0:
        raise ValueError(f"--snapshot-every must be >= 0 seconds, got {args.snapshot_every}")
    return dict(mode=args.mode, latency_budget=args.latency_budget, queue_size=args.queue_size,
                timeout=args.timeout, reconnect=ReconnectPolicy(max_attempts=args.max_reconnects), keyframes=keyframes,
                snapshot_every=args.snapshot_every)


def spec_factory(args: argparse.Namespace, stream_defaults: dict) -> Callable[[str, str, list[Prompt]], LiveStreamSpec]:
    """How ``live`` builds a stream's spec, for its sources and for those the control plane adds."""

    def make_spec(stream_id: str, source: str, prompts: list[Prompt]) -> LiveStreamSpec:
        options = {"rtsp_transport": args.rtsp_transport} if source.lower().startswith("rtsp") else {}
        return LiveStreamSpec(stream_id, source, prompts, options=options, **stream_defaults)

    return make_spec


def run_live_command(args: argparse.Namespace) -> int:
    from pipeline.control.http import ApiServer
    from pipeline.control.redis import RedisControl
    from pipeline.prompts import parse_prompt

    served = args.api_port is not None or args.control is not None
    if not args.sources and not served:
        print("error: give live sources, or --api-port / --control to add them while it runs", file=sys.stderr)
        return 2
    if args.sources and not args.prompt and not served:
        print("error: give --prompt (or --api-port / --control to add prompts while it runs)", file=sys.stderr)
        return 2
    sinks = [s.strip() for group in (args.sink or ["jsonl"]) for s in group.split(",") if s.strip()]
    prompts = [parse_prompt(spec, number) for number, spec in enumerate(args.prompt)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    try:
        stream_defaults = live_stream_defaults(args)
        policy = SourcePolicy(tuple(s.strip().lower() for s in args.allow_schemes.split(",") if s.strip()),
                              args.allow_files)
        check_segmenter(args.segmenter, options)
        check_checkpoint(options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        runner = _runner(args, sinks, options)
    except ValueError as exc:
        print(f"error: --sink: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    make_spec = spec_factory(args, stream_defaults)
    handler = CommandHandler(runner, make_spec, policy)
    try:
        api = ApiServer(handler, args.api_port, args.api_address).start() if args.api_port is not None else None
    except OSError as exc:
        print(f"error: --api-port: cannot listen on {args.api_address}:{args.api_port} ({exc.strerror or exc})",
              file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        serve_metrics(runner, args.metrics_port, args.metrics_address)
    control = RedisControl(handler, args.control).start() if args.control else None

    def interrupted(signum: int, _frame: object) -> None:
        log.info("%s: stopping (flushing sinks)", signal.Signals(signum).name)
        runner.stop()

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for source in args.sources:
            runner.add_stream(make_spec(derive_stream_id(source, runner.streams), source, prompts))
        if args.duration is not None:
            threading.Timer(args.duration, runner.stop).start()
        runner.wait(until_stopped=served)
        summary = runner.summary()
    finally:
        for server in (control, api):
            if server is not None:
                server.stop()
        runner.shutdown()
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)
    (Path(args.out) / "live_summary.json").write_text(json.dumps(summary, indent=1))
    _print_summary(summary)
    return 1 if summary["failed"] else 0


def _runner(args: argparse.Namespace, sinks: list[str], options: dict):
    """The runtime ``--runtime`` names; ValueError for a bad sink, PipelineError for a bad --address."""
    if args.runtime == "in-process":
        from pipeline.live.runner import LiveRunner

        return LiveRunner(sinks, args.out, args.segmenter, options)
    from pipeline.live.cluster import RayLiveRunner

    return RayLiveRunner(sinks, args.out, args.segmenter, options, args.segmenter_placement, args.address)


def _print_summary(summary: dict) -> None:
    for s in summary["streams"]:
        latency = s["latency"]
        line = (f"{s['stream_id']}: {s['status']}, {s['frames_in']} frames in ({s['fps_in']} fps), "
                f"{s['frames_processed']} processed ({s['fps_out']} fps), drops {s['drops']}, "
                f"latency p50 {latency['p50_ms']} ms p95 {latency['p95_ms']} ms, reconnects {s['reconnects']}")
        if s["error"]:
            line += f"; error: {s['error']['reason']}"
        print(line, file=sys.stderr)
    print(json.dumps(summary["streams"] and {s["stream_id"]: s["status"] for s in summary["streams"]}))
