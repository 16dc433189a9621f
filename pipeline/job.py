"""The archive job: the Python API that the CLI is a thin layer over.

``run_job(JobConfig(...))`` expands the sources, checks prompts and the output
folder before any work, skips videos a previous run finished with the same
settings, runs up to ``parallel`` videos at once on Ray, shows progress, and
writes ``summary.json`` (also when interrupted).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import ray
from pydantic import TypeAdapter, ValidationError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from operators.errors import PipelineError, error_record
from operators.output_files import prepare_out_dir, write_output
from pipeline.checkpoint import DONE_FILE, read_done
from pipeline.config import JobConfig
from pipeline.prompts import PromptBook
from pipeline.runtime import (
    InlineSegmenter,
    StreamWorker,
    default_workers,
    init_ray,
    prompt_fingerprint,
    segmenter_pool,
)
from pipeline.session import StreamReport, StreamSpec
from pipeline.sources import expand_sources, source_bytes
from pipeline.split import SplitVideo, can_split, chunk_counts, plan_video

SUMMARY_FILE = "summary.json"
POLL_SECONDS = 0.25
WORKER_DIED = "WorkerDied"
MAX_ATTEMPTS = 3  # a video whose stream worker dies (process or node lost) is run again, up to this many times
#: A video's status in the summary; ``interrupted``: the job stopped (Ctrl-C) before the video finished.
STATUSES = ("done", "skipped", "failed", "interrupted")


@dataclass
class JobSummary:
    out_dir: Path
    videos: list[StreamReport] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)  # what the user should know though nothing failed

    @property
    def frames(self) -> int:
        return sum(v.frames for v in self.videos if v.status == "done")

    @property
    def failures(self) -> list[StreamReport]:
        return [v for v in self.videos if v.status == "failed"]

    def to_dict(self) -> dict:
        return {
            "videos": [v.to_dict() for v in self.videos],
            "counts": {s: sum(v.status == s for v in self.videos) for s in STATUSES},
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "fps": round(self.frames / self.seconds, 2) if self.seconds > 0 else 0.0,
            "failures": [v.error for v in self.failures],
            "interrupted": self.interrupted,
            "warnings": self.warnings,
        }

    def write(self) -> Path:
        path = self.out_dir / SUMMARY_FILE
        write_output(path, json.dumps(self.to_dict(), indent=1))
        return path


def assign_stream_ids(paths: Sequence[Path]) -> list[str]:
    """File stems (a frame folder's name), made unique with the parent folder's name (then an index) where
    they collide."""
    ids: list[str] = []
    stems = [p.name if p.is_dir() else p.stem for p in paths]
    for path, stem in zip(paths, stems):
        candidate = stem if stems.count(stem) == 1 else f"{path.parent.name}-{stem}"
        base, n = candidate, 1
        while candidate in ids:
            n += 1
            candidate = f"{base}-{n}"
        ids.append(candidate)
    return ids


def plan_streams(config: JobConfig) -> tuple[list[StreamSpec], list[StreamReport], list[str]]:
    """Stream specs for every source with prompts resolved, failed reports for sources that cannot run, and
    warnings (prompt-file entries that name no video).

    A bad prompt file or prompt spec stops the job (nothing could run right);
    a missing video or a video without prompts fails that video only.
    """
    book = PromptBook.from_cli(config.prompts, config.prompts_file)
    paths, failed, seen = [], [], set()
    for source in config.sources:
        try:
            found = expand_sources([source], recursive=config.recursive)
        except PipelineError as exc:
            failed.append(StreamReport(Path(source).name or source, source, "failed", error=exc.to_dict()))
            continue
        for path in found:  # one video named two ways (relative, absolute, via a link) runs once
            if path.resolve() not in seen:
                seen.add(path.resolve())
                paths.append(path)
    unused = book.unused_keys(paths)
    warnings = [f"{config.prompts_file}: no video matches the entries {', '.join(map(repr, unused))}"] if unused else []
    specs = []
    for stream_id, path in zip(assign_stream_ids(paths), paths):
        prompts = book.for_video(path)
        if not prompts:
            reason = "no prompt for this video: give --prompt or an entry in --prompts-file"
            if unused:
                reason += f" (its entries {', '.join(map(repr, unused))} match no video)"
            failed.append(StreamReport(stream_id, str(path), "failed", error=PipelineError(str(path), reason).to_dict()))
            continue
        specs.append(
            StreamSpec(
                stream_id=stream_id,
                source=str(path),
                prompts=prompts,
                out_dir=str(config.out_dir),
                sinks=config.sinks,
                segmenter=config.segmenter,
                decoder=config.decoder,
                folder_fps=config.fps,
                keyframes=config.keyframe_config(),
                association=config.association_config(),
                max_pending=config.max_pending,
                checkpoint_every=config.checkpoint_every,
                resume=config.resume,
                fingerprint={**config.fingerprint(), "source": str(path.resolve()),
                             "prompts": prompt_fingerprint(prompts), **({"fps": config.fps} if path.is_dir() else {})},
            )
        )
    return specs, failed, warnings


class _ProgressView:
    """A job bar and one bar per running video (frames done, fps, ETA)."""

    def __init__(self, total_videos: int, enabled: bool, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[fps]}"), TimeRemainingColumn(),
            console=console, disable=not enabled, transient=False,
        )
        self.job = self.progress.add_task("videos", total=total_videos, fps="")
        self.tasks: dict[str, tuple[int, float]] = {}

    def start(self, stream_id: str) -> None:
        if stream_id in self.tasks:  # a retry after its worker died: the same bar starts over
            self.progress.reset(self.tasks[stream_id][0])
            self.tasks[stream_id] = (self.tasks[stream_id][0], time.perf_counter())
            return
        self.tasks[stream_id] = (self.progress.add_task(f"  {stream_id}", total=None, fps=""), time.perf_counter())

    def update(self, stream_id: str, done: int, expected: int | None) -> None:
        task, started = self.tasks[stream_id]
        fps = done / max(time.perf_counter() - started, 1e-6)
        self.progress.update(task, completed=done, total=expected, fps=f"{fps:6.1f} fps")

    def finish(self, report: StreamReport, key: str | None = None, video: bool = True) -> None:
        """``key``: the bar's (a chunk's work id), else the video's; ``video``: the job's bar advances."""
        key = key or report.stream_id
        if key in self.tasks:
            task, _ = self.tasks.pop(key)
            status = "[green]done" if report.status in ("done", "skipped") else "[red]failed"
            self.progress.update(task, description=f"  {key} {status}", total=report.frames,
                                 completed=report.frames)
        if video:
            self.progress.advance(self.job)


def print_table(summary: JobSummary, console: Console) -> None:
    table = Table(title=f"xsam-pipeline: {summary.out_dir}")
    for column in ("video", "status", "frames", "keyframes", "fps", "note"):
        table.add_column(column)
    for v in summary.videos:
        note = ""
        if v.error:
            frame = "" if v.error.get("frame_index") is None else f" (frame {v.error['frame_index']})"
            note = f"{v.error['error']}{frame}: {v.error['reason']}"
        elif v.warnings:
            note = f"warning: {v.warnings[0]}" + (f" (+{len(v.warnings) - 1} more)" if len(v.warnings) > 1 else "")
        style = {"done": "green", "skipped": "cyan", "failed": "red", "interrupted": "yellow"}[v.status]
        table.add_row(v.stream_id, f"[{style}]{v.status}", str(v.frames), str(v.keyframes), f"{v.fps:.1f}", note)
    console.print(table)
    console.print(f"{summary.frames} frames in {summary.seconds:.1f} s; summary: {summary.out_dir / SUMMARY_FILE}")


def run_job(config: JobConfig, console: Console | None = None) -> JobSummary:
    """Run an archive job to completion and return its summary (also written to ``summary.json``)."""
    console = console or Console(stderr=True)
    specs, failed, warnings = plan_streams(config)  # a bad prompt stops the job before --out is created
    out_dir = prepare_out_dir(Path(config.out_dir))
    summary = JobSummary(out_dir, videos=list(failed))

    def warn(warning: str) -> None:
        summary.warnings.append(warning)
        console.print(f"[yellow]warning:[/yellow] {warning}")

    for warning in warnings:
        warn(warning)
    todo: list[StreamSpec] = []
    for spec in specs:
        skipped = _skipped(spec, warn) if config.resume else None
        if skipped is None:
            todo.append(spec)
        else:
            summary.videos.append(skipped)
    started = time.perf_counter()
    view = _ProgressView(len(specs) + len(failed), config.progress, console)
    view.progress.advance(view.job, len(specs) + len(failed) - len(todo))
    stopped_by: Exception | None = None
    try:
        if todo:
            _run_streams(config, todo, summary, view, warn)
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    except Exception as exc:
        stopped_by = exc
        raise
    finally:
        _list_unfinished(todo, summary, stopped_by)
        summary.seconds = time.perf_counter() - started
        order = {s.stream_id: i for i, s in enumerate(specs)}
        summary.videos.sort(key=lambda v: order.get(v.stream_id, len(order)))
        summary.write()
    if config.progress:
        print_table(summary, console)
    return summary


_REPORT = TypeAdapter(StreamReport)


def _skipped(spec: StreamSpec, warn: Callable[[str], None]) -> StreamReport | None:
    """A video a previous run finished with the same settings, with that run's figures; None to process it
    (``warn`` says why where its ``done.json`` could not be used)."""
    previous = read_done(spec.stream_dir, spec.fingerprint, warn)
    if previous is None:
        return None
    kept = {name: previous[name] for name in StreamReport.__dataclass_fields__ if name in previous}
    try:
        return _REPORT.validate_python({**kept, "stream_id": spec.stream_id, "source": spec.source,
                                        "status": "skipped"})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        warn(f"{spec.stream_dir / DONE_FILE}: its report's {where} is wrong ({first['msg']}); "
             "the video is processed again")
        return None


def _list_unfinished(todo: Sequence[StreamSpec], summary: JobSummary, stopped_by: Exception | None) -> None:
    """Every video in the summary: those the job never finished are ``interrupted`` (Ctrl-C) or ``failed``
    with the error that stopped the job (``stopped_by``)."""
    reported = {v.stream_id for v in summary.videos}
    for spec in todo:
        if spec.stream_id in reported:
            continue
        if summary.interrupted:
            summary.videos.append(StreamReport(spec.stream_id, spec.source, "interrupted"))
            continue
        error = error_record(stopped_by, spec.source, reason=None if isinstance(stopped_by, PipelineError)
                             else f"the job stopped: {stopped_by}")
        summary.videos.append(StreamReport(spec.stream_id, spec.source, "failed", error=error))


def _split_work(config: JobConfig, todo: list[StreamSpec], slots: int, warn: Callable[[str], None],
                finished: Callable[[StreamReport], None]) -> tuple[list[StreamSpec], dict[str, SplitVideo]]:
    """The streams to run, biggest first: whole videos, and the chunks of those split
    (:mod:`pipeline.split`) that an earlier run did not finish (a finished chunk's report is collected
    now, and ``finished`` is given its video's report if every chunk is in)."""
    counts = chunk_counts(config.split, len(todo), slots) if can_split(config.sinks) else [1] * len(todo)
    queue: list[StreamSpec] = []
    splits: dict[str, SplitVideo] = {}
    for spec, count in zip(longest_first(todo), counts):
        chunks = plan_video(spec, count, overlap=config.keyframe_every)
        if len(chunks) == 1:
            queue.append(spec)
            continue
        splits[spec.stream_id] = video = SplitVideo.of(spec, chunks)
        for chunk in video.chunks:
            done = _skipped(chunk, warn) if config.resume else None
            if done is None:
                queue.append(chunk)
            elif (report := video.collect(chunk, done)) is not None:
                finished(report)
    return queue, splits


def _run_streams(config: JobConfig, todo: list[StreamSpec], summary: JobSummary, view: _ProgressView,
                 warn: Callable[[str], None]) -> None:
    """Feed the streams (videos, or chunks of a split video) to ``parallel`` long-lived stream workers, each
    taking the next when it finishes."""
    init_ray(config.address)
    pool = segmenter_pool(config.segmenter, config.segmenter_options, config.workers or default_workers(),
                          config.segmenter_placement)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))

    def finished(report: StreamReport, key: str | None = None) -> None:
        summary.videos.append(report)
        view.finish(report, key)

    queue, splits = _split_work(config, todo, config.parallel or cpus, warn, finished)
    if not queue:
        return
    parallel = min(len(queue), config.parallel or cpus)
    for spec in queue:  # streams sharing few cores decode with one thread each: FFmpeg's threads only contend
        spec.decode_threads = max(1, cpus // parallel)
    attempts: dict[str, int] = {}
    workers = _WorkerSlots(parallel)
    running: dict[ray.ObjectRef, tuple[StreamSpec, int]] = {}
    launched = 0
    try:
        queue = _encode_memories(queue, splits, workers, pool[0], finished)
        with view.progress:
            while queue or running:
                busy = {slot for _, slot in running.values()}
                free = [slot for slot in range(parallel) if slot not in busy]
                starting = [(slot, queue.pop(0)) for slot in free[: len(queue)]]
                busy |= {slot for slot, _ in starting}
                for slot, spec in starting:
                    attempts[spec.work_id] = attempts.get(spec.work_id, 0) + 1
                    running[workers.run(slot, spec, pool[launched % len(pool)], busy)] = (spec, slot)
                    launched += 1
                    view.start(spec.work_id)
                done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
                for ref in done:
                    spec, slot = running.pop(ref)
                    report = _collect(ref, spec)
                    if report.error and report.error["error"] == WORKER_DIED:
                        workers.replace(slot)  # its process or node died
                        if attempts[spec.work_id] < MAX_ATTEMPTS:
                            queue.insert(0, spec)  # it runs again, from its last checkpoint if it made one
                            continue
                    report.attempts = attempts[spec.work_id]
                    if spec.chunk is None:
                        finished(report)
                        continue
                    view.finish(report, spec.work_id, video=False)
                    video_report = splits[spec.stream_id].collect(spec, report)
                    if video_report is not None:
                        finished(video_report)
                if config.progress:
                    for spec, slot in running.values():
                        try:
                            frames, expected = ray.get(workers[slot].progress.remote(), timeout=5)
                        except (ray.exceptions.RayError, TimeoutError):
                            continue
                        view.update(spec.work_id, frames, expected)
                workers.share_cores({slot for _, slot in running.values()})
    finally:
        workers.shutdown()


def _encode_memories(queue: list[StreamSpec], splits: dict[str, SplitVideo], workers: "_WorkerSlots",
                     segmenter: "ray.actor.ActorHandle | InlineSegmenter",
                     finished: Callable[[StreamReport], None]) -> list[StreamSpec]:
    """Encode, once per split video, the prompts its queued later chunks start from; the queue less the
    chunks of a video whose prompts could not be encoded (that video fails, named)."""
    failed: set[str] = set()
    for stream_id in dict.fromkeys(s.stream_id for s in queue if s.chunk is not None and s.chunk.index > 0):
        video = splits[stream_id]
        result = _collect(workers[0].encode_prompts.remote(video.spec, segmenter), video.spec)
        if isinstance(result, StreamReport):
            failed.add(stream_id)
            finished(result)
        else:
            video.give_memories(result)
    return [spec for spec in queue if spec.stream_id not in failed]


def longest_first(specs: Sequence[StreamSpec]) -> list[StreamSpec]:
    """The biggest files first: a long video started last would keep one worker busy after the others end.

    File size (a frame folder's frames together) stands for a video's work (length times resolution), known
    without opening it.
    """
    return sorted(specs, key=lambda spec: source_bytes(Path(spec.source)), reverse=True)


def spread_over(node_cpus: dict[str, int], count: int) -> list[str | None]:
    """Nodes for ``count`` workers, round by round: in round r every node with more than r CPUs takes one,
    so workers go one per core across the cluster (again from the start when they outnumber the cores).
    None where no node has a CPU (let Ray choose)."""
    nodes = [n for n, cpus in sorted(node_cpus.items(), key=lambda kv: -kv[1]) if cpus > 0]
    if not nodes:
        return [None] * count
    one_pass = [n for r in range(node_cpus[nodes[0]]) for n in nodes if node_cpus[n] > r]
    return [one_pass[i % len(one_pass)] for i in range(count)]


class _WorkerSlots:
    """The job's stream workers, one per core over the nodes; a dead one is replaced away from its node.

    Workers need no CPU of Ray's (they share cores with the segmenter), so Ray's ``SPREAD`` may pack them
    on one node: each is pinned to the node :func:`spread_over` gives it. The pin is hard: Ray did not
    honour a soft one for these zero-CPU actors (three of four on one node of three, seen here). A worker
    pinned to a node that dies before it starts fails like one on a node that dies later, and is replaced.
    When a node dies, Ray may still offer it for a moment, and a replacement placed there dies too,
    costing the video another attempt. Each worker's node is asked when it starts, so its replacement can
    be pinned (softly) to the live node holding the fewest of the job's workers.
    """

    def __init__(self, count: int) -> None:
        self.workers: list[ray.actor.ActorHandle] = []
        self.homes: list[ray.ObjectRef] = []  # each worker's node id, resolved once it has started
        self.threads: list[int] = []  # the OpenCV threads each worker was last told to use
        self.node_cpus = {n["NodeID"]: int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]}
        self.placed_on: list[str | None] = []  # the node each worker was pinned to, if any
        for node in spread_over(self.node_cpus, count):
            self._start("SPREAD" if node is None else NodeAffinitySchedulingStrategy(node, soft=False))

    def __getitem__(self, slot: int) -> "ray.actor.ActorHandle":
        return self.workers[slot]

    def _start(self, strategy: "str | NodeAffinitySchedulingStrategy", slot: int | None = None) -> None:
        worker = StreamWorker.options(num_cpus=0, scheduling_strategy=strategy).remote()
        node = strategy.node_id if isinstance(strategy, NodeAffinitySchedulingStrategy) else None
        if slot is None:
            self.workers.append(worker)
            self.homes.append(worker.node_id.remote())
            self.threads.append(1)
            self.placed_on.append(node)
        else:
            self.workers[slot], self.homes[slot], self.threads[slot] = worker, worker.node_id.remote(), 1
            self.placed_on[slot] = node

    def _node_of(self, slot: int) -> str | None:
        try:
            return ray.get(self.homes[slot], timeout=0)
        except (ray.exceptions.RayError, TimeoutError):
            return None

    def replace(self, slot: int) -> None:
        lost = self._node_of(slot)
        others = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != lost]
        if lost is None or not others:
            self._start("SPREAD", slot)
            return
        placed = [self._node_of(s) for s in range(len(self.workers)) if s != slot]
        target = min(others, key=placed.count)
        self._start(NodeAffinitySchedulingStrategy(target, soft=True), slot)

    def shares(self, busy: set[int]) -> dict[int, int]:
        """OpenCV threads for each of the ``busy`` workers: its node's cores split among the node's busy
        workers. A worker not yet started counts on the node it was placed on."""
        nodes = {slot: self._node_of(slot) or self.placed_on[slot] for slot in busy}
        return {slot: max(1, self.node_cpus.get(node, 1) // sum(1 for other in nodes.values() if other == node))
                for slot, node in nodes.items() if node is not None}

    def run(self, slot: int, spec: StreamSpec, segmenter: "ray.actor.ActorHandle | InlineSegmenter",
            busy: set[int]) -> ray.ObjectRef:
        """Start ``spec`` on worker ``slot`` with its share of the cores while ``busy`` (itself included) run."""
        self.threads[slot] = self.shares(busy).get(slot, 1)
        return self.workers[slot].run.remote(spec, segmenter, self.threads[slot])

    def share_cores(self, busy: set[int]) -> None:
        """Split each node's cores among its busy workers: when fewer videos than cores are left (the job's
        tail, or a single video), the remaining streams run OpenCV's parallel loops on the idle cores."""
        for slot, threads in self.shares(busy).items():
            if threads != self.threads[slot]:
                self.workers[slot].use_threads.remote(threads)
                self.threads[slot] = threads

    def shutdown(self) -> None:
        for worker in self.workers:
            try:
                ray.kill(worker)
            except Exception:  # noqa: BLE001 - a worker lost with its node cannot even be reached to stop
                pass


def _collect(ref: ray.ObjectRef, spec: StreamSpec) -> Any:
    """A stream worker's finished call's result (a stream's report); one that raised or whose worker died
    becomes a failed report, not a crashed job."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:  # the worker is alive and its run raised: running again would too
        cause = exc.cause or exc
        return StreamReport(spec.stream_id, spec.source, "failed", error=error_record(cause, spec.source))
    except ray.exceptions.RayError as exc:
        error = error_record(exc, spec.source, kind=WORKER_DIED, reason=f"stream worker died ({type(exc).__name__}): {exc}")
        return StreamReport(spec.stream_id, spec.source, "failed", error=error)
