"""``xsam-pipeline ui``: the command that serves the page (FastAPI and uvicorn load only when it runs)."""

from __future__ import annotations

import argparse
import socket
import urllib.parse
from pathlib import Path

from operators.errors import PipelineError
from operators.output_files import prepare_out_dir

DEFAULT_PORT = 8765


def add_ui_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("ui", help="a web page to place prompts on a frame, preview, run jobs, watch live")
    parser.add_argument("--root", type=Path, required=True, help="folder whose videos the page may open")
    parser.add_argument("--out", type=Path, required=True, help="folder the page's jobs write their outputs under")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"HTTP port (default {DEFAULT_PORT})")
    parser.add_argument("--address", default="127.0.0.1",
                        help="interface to serve on (default 127.0.0.1; the page has no login: keep it local)")
    parser.add_argument("--live-api", metavar="URL", help="the live service's HTTP API (xsam-pipeline live --api-port)")
    parser.set_defaults(handler=serve)
    return parser


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from pipeline.ui.server import Settings, create_app

    if not args.root.is_dir():
        raise PipelineError(str(args.root), "--root: not a folder")
    if args.live_api and urllib.parse.urlsplit(args.live_api).scheme not in ("http", "https"):
        raise PipelineError(args.live_api, "--live-api: give the live service's http:// URL")
    out = prepare_out_dir(args.out)
    listener = _listen(args.address, args.port)
    app = create_app(Settings(args.root.resolve(), out.resolve(), args.live_api))
    print(f"xsam-pipeline ui: http://{args.address}:{args.port}/ (sources under {args.root}, outputs under {out})",
          flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])
    return 0


def _listen(address: str, port: int) -> socket.socket:
    """The page's socket, bound here: a port in use is the CLI's one-line error, not a log line of uvicorn's."""
    listener = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((address, port))
    except OSError as exc:
        listener.close()
        raise PipelineError("--port", f"cannot listen on {address}:{port} ({exc.strerror or exc})") from None
    return listener
