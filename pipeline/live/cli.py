"""``xsam-pipeline live``: its options, the per-stream settings they give, and the command itself."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from typing import Callable

from operators.errors import PipelineError
from operators.output_files import write_output
from operators.records import Prompt
from operators.segmenters import check_checkpoint
from pipeline.config import add_stream_options, option_help, stream_overrides
from pipeline.control.commands import CommandHandler, SourcePolicy, derive_stream_id
from pipeline.live.metrics import serve_metrics
from pipeline.live.options import LiveConfig
from pipeline.live.stream import LiveStreamSpec
from pipeline.sources import ReconnectPolicy

log = logging.getLogger("pipeline.live")


def add_live_parser(commands: "argparse._SubParsersAction") -> None:
    """Register ``xsam-pipeline live URL [URL...]``; each option's help and default is :class:`LiveConfig`'s."""
    live = commands.add_parser("live", help="segment live feeds (rtsp/udp/tcp/http URLs, /dev/videoN) until interrupted")
    live.add_argument("sources", nargs="*", help=option_help(LiveConfig, "sources"))
    live.add_argument("--prompt", action="append", metavar="SPEC",
                      help="point:X,Y | box:X0,Y0,X1,Y1 | scribble:PNG | mask:PNG; repeatable (applies to every "
                           "stream given here; optional with --api-port or --control, which add prompts later)")
    add_stream_options(live, LiveConfig)
    for flag, metavar, kind in (("--latency-budget", "S", float), ("--queue-size", "N", int),
                                ("--snapshot-every", "S", float), ("--timeout", "S", float),
                                ("--max-reconnects", "N", int), ("--duration", "S", float),
                                ("--metrics-port", "PORT", int), ("--metrics-address", "ADDRESS", str),
                                ("--control", "URL", str), ("--api-port", "P", int), ("--api-address", "ADDRESS", str),
                                ("--allow-schemes", "LIST", str)):
        live.add_argument(flag, type=kind, metavar=metavar, help=option_help(LiveConfig, _field(flag)))
    for flag, choices in (("--mode", ("live", "archive")), ("--runtime", ("ray", "in-process")),
                          ("--rtsp-transport", ("tcp", "udp"))):
        live.add_argument(flag, choices=choices, help=option_help(LiveConfig, _field(flag)))
    live.add_argument("--allow-files", action="store_const", const=True, help=option_help(LiveConfig, "allow_files"))
    live.set_defaults(handler=run_live_command)


#: The options of ``live`` alone (every command's are :func:`pipeline.config.stream_overrides`').
LIVE_OPTIONS = ("latency_budget", "queue_size", "snapshot_every", "timeout", "max_reconnects", "duration",
                "metrics_port", "metrics_address", "control", "api_port", "api_address", "allow_schemes", "mode",
                "runtime", "rtsp_transport", "allow_files")


def _field(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")


def live_config(args: argparse.Namespace) -> LiveConfig:
    """The explicit command-line options layered over the environment and --config (:mod:`pipeline.config`)."""
    given = dict(stream_overrides(args), sources=args.sources or None, prompts=args.prompt,
                 **{name: getattr(args, name) for name in LIVE_OPTIONS})
    return LiveConfig(**{name: value for name, value in given.items() if value is not None})


def live_stream_defaults(config: LiveConfig) -> dict:
    """The per-stream settings of ``live``'s options."""
    return dict(mode=config.mode, latency_budget=config.latency_budget, queue_size=config.queue_size,
                timeout=config.timeout, reconnect=ReconnectPolicy(max_attempts=config.max_reconnects),
                keyframes=config.keyframe_config(), snapshot_every=config.snapshot_every,
                max_pending=config.max_pending)


def spec_factory(config: LiveConfig, stream_defaults: dict) -> Callable[[str, str, list[Prompt]], LiveStreamSpec]:
    """How ``live`` builds a stream's spec, for its sources and for those the control plane adds."""

    def make_spec(stream_id: str, source: str, prompts: list[Prompt]) -> LiveStreamSpec:
        options = {"rtsp_transport": config.rtsp_transport} if source.lower().startswith("rtsp") else {}
        return LiveStreamSpec(stream_id, source, prompts, options=options, **stream_defaults)

    return make_spec


def run_live_command(args: argparse.Namespace) -> int:
    from pipeline.control.http import ApiServer
    from pipeline.control.redis import RedisControl
    from pipeline.prompts import parse_prompt

    config = live_config(args)  # a bad option: pipeline.cli.main's one-line error
    served = config.api_port is not None or config.control is not None
    if not config.sources and not served:
        print("error: give live sources, or --api-port / --control to add them while it runs", file=sys.stderr)
        return 2
    if config.sources and not config.prompts and not served:
        print("error: give --prompt (or --api-port / --control to add prompts while it runs)", file=sys.stderr)
        return 2
    prompts = [parse_prompt(spec, number) for number, spec in enumerate(config.prompts)]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        stream_defaults = live_stream_defaults(config)
        policy = SourcePolicy(tuple(config.allow_schemes), config.allow_files)
        check_checkpoint(config.segmenter_options)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        runner = build_runner(config)
    except ValueError as exc:
        print(f"error: --sink: {exc}", file=sys.stderr)
        return 2
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    make_spec = spec_factory(config, stream_defaults)
    handler = CommandHandler(runner, make_spec, policy)
    try:
        api = ApiServer(handler, config.api_port, config.api_address).start() if config.api_port is not None else None
    except OSError as exc:
        print(f"error: --api-port: cannot listen on {config.api_address}:{config.api_port} ({exc.strerror or exc})",
              file=sys.stderr)
        return 2
    if config.metrics_port is not None:
        serve_metrics(runner, config.metrics_port, config.metrics_address)
    control = RedisControl(handler, config.control).start() if config.control else None

    def interrupted(signum: int, _frame: object) -> None:
        log.info("%s: stopping (flushing sinks)", signal.Signals(signum).name)
        runner.stop()

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for source in config.sources:
            runner.add_stream(make_spec(derive_stream_id(source, runner.streams), source, prompts))
        if config.duration is not None:
            threading.Timer(config.duration, runner.stop).start()
        runner.wait(until_stopped=served)
        summary = runner.summary()
    finally:
        for server in (control, api):
            if server is not None:
                server.stop()
        runner.shutdown()
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)
    write_output(config.out_dir / "live_summary.json", json.dumps(summary, indent=1))
    _print_summary(summary)
    return 1 if summary["failed"] else 0


def build_runner(config: LiveConfig):
    """The runtime ``--runtime`` names; ValueError for a bad sink, PipelineError for a bad --address."""
    if config.runtime == "in-process":
        from pipeline.live.runner import LiveRunner

        return LiveRunner(config.sinks, config.out_dir, config.segmenter, config.segmenter_options)
    from pipeline.live.cluster import RayLiveRunner

    return RayLiveRunner(config.sinks, config.out_dir, config.segmenter, config.segmenter_options,
                         config.segmenter_placement, config.address)


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
