"""Ray actors: one stateful actor per stream and a shared pool of segmenter actors.

- :class:`SegmenterWorker` holds a model and nothing about any stream: every call
  carries the stream's prompt memory, so any worker can serve any stream and a
  restarted worker simply retries the call.
- :class:`StreamWorker` decodes its video, keeps the stream's state
  (:class:`operators.stream.StreamProcessor`) and sends keyframes to its
  segmenter; at most one keyframe and ``max_pending`` frames are in flight.
  A lightweight CPU segmenter runs in the stream worker itself instead
  (:class:`InlineSegmenter`, see :func:`segmenter_pool`).
  Its sinks (RLE encoding, files, brokers) write on a thread of that process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import ray

from operators.association import AssociationConfig
from operators.errors import PipelineError
from operators.keyframes import KeyframeConfig
from operators.records import FrameRecord, Prompt
from operators.segmenters import Segmenter, build_segmenter, is_lightweight
from operators.sinks import StreamInfo, build_sinks
from operators.sinks.base import stream_dir
from operators.sinks.delivery import undelivered_error
from operators.sinks.writer import SinkWriter
from operators.stream import (
    Future, KeyframeRequest, KeyframeResult, StreamProcessor, run_keyframes, run_stream, thread_submit,
)
from pipeline.batching import MicroBatcher
from pipeline.checkpoint import StreamCheckpoints, write_done
from pipeline.sources import DEFAULT_FOLDER_FPS, open_video


@dataclass
class StreamSpec:
    """What one stream actor needs: its id, source, prompts and settings."""

    stream_id: str
    source: str
    prompts: list[Prompt]
    out_dir: str
    sinks: list[str]
    segmenter: str = "default"  # its name: its prompt memory type restores checkpoints
    decoder: str = "pyav"
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    max_pending: int = 16
    fingerprint: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = 300  # frames between stream checkpoints; 0 disables them
    decode_threads: int = 0  # FFmpeg decoder threads; 0 lets FFmpeg choose
    folder_fps: float = DEFAULT_FOLDER_FPS  # a frame folder's frame rate (its pts are index / fps)
    resume: bool = True  # continue from a checkpoint left by an earlier run

    @property
    def stream_dir(self) -> Path:
        return Path(self.out_dir) / self.stream_id


@dataclass
class StreamReport:
    stream_id: str
    source: str
    status: str  # done | failed | skipped | interrupted (pipeline.job.STATUSES)
    frames: int = 0
    expected_frames: int | None = None
    seconds: float = 0.0
    keyframes: int = 0
    propagated: int = 0
    skipped_frames: int = 0
    keyframe_reasons: dict[str, int] = field(default_factory=dict)
    prompt_memory_bytes: int = 0
    outputs: list[dict] = field(default_factory=list)
    error: dict | None = None
    attempts: int = 1  # runs of this video; more than 1 when its stream worker died and it ran again
    resumed_from: int | None = None  # the frame a checkpoint let this run start at
    concealed_frames: list[int] = field(default_factory=list)  # decoded from damaged data, patched by FFmpeg
    warnings: list[str] = field(default_factory=list)  # what the user should know though the video did not fail

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "fps": round(self.fps, 2)}


def prompt_fingerprint(prompts: Sequence[Prompt]) -> str:
    """A stable hash of the prompts, so a re-run with other prompts does not skip a video."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(repr((p.prompt_id, p.kind, p.frame_index, p.points, p.box)).encode())
        if p.mask is not None:
            digest.update(np.packbits(p.mask).tobytes())
    return digest.hexdigest()[:16]


def _limit_threads(threads: int = 1) -> None:
    """Several actors share few cores: one OpenCV/torch thread each avoids oversubscription.

    torch is only touched if something already imported it: importing it costs ~1.5 s and ~110 MB per actor.
    """
    cv2.setNumThreads(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


#: Keyframes a segmenter actor takes at once: that many streams' calls can wait on its threads.
SEGMENTER_MAX_BATCH = 8


@ray.remote(max_restarts=-1, max_task_retries=3, max_concurrency=SEGMENTER_MAX_BATCH + 1)
class SegmenterWorker:
    """A segmenter model serving keyframes of any stream; stateless, so retries are safe.

    Keyframes that arrive while the model is busy go to it together, in one batched call
    (:class:`pipeline.batching.MicroBatcher`, :func:`operators.stream.run_keyframes`).
    """

    def __init__(self, name: str, options: dict[str, Any]) -> None:
        _limit_threads()
        self.segmenter = build_segmenter(name, **options)
        self.batcher = MicroBatcher(lambda requests: run_keyframes(self.segmenter, requests), SEGMENTER_MAX_BATCH,
                                    name="keyframe-batches")

    def keyframe(self, request: KeyframeRequest) -> KeyframeResult:
        return self.batcher.submit(request)

    def batch_sizes(self) -> dict[int, int]:
        """How many batches of each size this worker ran."""
        return dict(self.batcher.batch_sizes)


@dataclass(frozen=True)
class InlineSegmenter:
    """Run keyframes in the stream worker's own process, for a lightweight CPU segmenter.

    Its call costs tens of ms on a CPU (35 ms for a 720p keyframe, 9 for a re-anchoring one): a round trip
    to a shared actor (pickling the frame and the prompt memory, a second process on the same cores) would
    add a sizeable share of that, and one actor would serialise every stream's keyframes.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _RayFuture:
    def __init__(self, ref: ray.ObjectRef) -> None:
        self.ref = ref

    def done(self) -> bool:
        ready, _ = ray.wait([self.ref], timeout=0)
        return bool(ready)

    def result(self) -> KeyframeResult:
        try:
            return ray.get(self.ref)
        except ray.exceptions.RayTaskError as exc:
            raise (exc.cause or exc) from None  # the model's own error, not Ray's wrapper with its traceback
        except ray.exceptions.ActorDiedError as exc:
            if not getattr(exc, "_actor_init_failed", False):
                raise
            # Ray gives only text: its coloured traceback, whose last line is the segmenter's own error.
            lines = [line for line in _ANSI.sub("", exc.error_msg).splitlines() if line.strip()]
            raise RuntimeError(f"the segmenter actor could not start: {lines[-1].strip() if lines else exc}") from None


@ray.remote(max_concurrency=4)
class StreamWorker:
    """Runs streams one after another: decode, keyframe schedule, per-stream memory and tracks.

    Long-lived and reused for every video of a job, so process start-up is paid once per worker rather
    than once per video. Its sinks write on a thread of this process (:class:`SinkWriter`): records
    (masks, and images for the MP4 sink) are never pickled or sent anywhere to be written.
    """

    def __init__(self, sinks: list[str], out_dir: str) -> None:
        _limit_threads()
        self.sink_names, self.out_dir = sinks, out_dir
        self.processor: StreamProcessor | None = None
        self.frames_done = 0
        self.expected: int | None = None
        self.inline: tuple[InlineSegmenter, Segmenter] | None = None  # built once, kept for the next video
        self.keyframe_thread = ThreadPoolExecutor(1, thread_name_prefix="keyframes")  # the inline segmenter's
        self.threads = 1  # cores the job lends this worker (use_threads)

    def _submitter(self, segmenter: "ray.actor.ActorHandle | InlineSegmenter") -> Callable[[KeyframeRequest], Future]:
        if not isinstance(segmenter, InlineSegmenter):
            return lambda request: _RayFuture(segmenter.keyframe.remote(request))
        if self.inline is None or self.inline[0] != segmenter:
            self.inline = (segmenter, build_segmenter(segmenter.name, **segmenter.options))
        # On its own thread while the job lends this worker more than one core (one video alone: 64.5 / 65.4 ->
        # 71.2 / 72.1 fps); in the stream's thread while every core has a stream of its own.
        return thread_submit(self.inline[1], self.keyframe_thread, overlap=lambda: self.threads > 1)

    def progress(self) -> tuple[int, int | None]:
        return self.frames_done, self.expected

    def use_threads(self, threads: int) -> None:
        """Take more cores for OpenCV's (and torch's) parallel loops when the job leaves some idle, or fewer."""
        _limit_threads(threads)
        self.threads = threads

    def run(self, spec: StreamSpec, segmenter: "ray.actor.ActorHandle | InlineSegmenter", threads: int = 1) -> StreamReport:
        """Process one video; ``threads``: the cores the job lends this worker to begin with (:meth:`use_threads`)."""
        self.use_threads(threads)
        report = StreamReport(spec.stream_id, spec.source, status="failed")
        started = time.perf_counter()
        checkpoints = StreamCheckpoints.of_segmenter(spec.stream_dir, spec.fingerprint, spec.segmenter,
                                                     report.warnings.append)
        resume = None
        self.processor, self.frames_done, self.expected = None, 0, None
        writer: SinkWriter | None = None
        try:
            stream_dir(Path(spec.out_dir), spec.stream_id)  # done.json and checkpoints go there, whatever the sinks
            with open_video(spec.source, backend=spec.decoder, threads=spec.decode_threads,
                            folder_fps=spec.folder_fps) as reader:
                info = reader.info
                self.expected = report.expected_frames = info.frame_count
                stream = StreamInfo(spec.stream_id, spec.source, info.width, info.height, info.fps)
                writer = SinkWriter(build_sinks(self.sink_names, self.out_dir), name=f"sink-{spec.stream_id}",
                                    source=spec.source)
                settings = dict(keyframes=spec.keyframes, association=spec.association,
                                keep_images=any(sink.needs_image for sink in writer.sinks))
                if spec.resume:
                    resume = checkpoints.load((info.height, info.width), spec.stream_id, spec.source, **settings)
                start = self.frames_done = resume.next_index if resume else 0
                for sink in writer.sinks:
                    sink.open(stream, start_frame=start)
                self.processor = resume.processor if resume else StreamProcessor(
                    spec.stream_id, spec.source, spec.prompts, **settings)
                report.resumed_from = start if resume else None

                def emit(record: FrameRecord) -> None:
                    writer.put(record)
                    self.frames_done += 1

                def checkpoint(last_image: np.ndarray) -> None:
                    writer.checkpoint()  # the sinks hold every record before the checkpoint, durably
                    checkpoints.save(self.processor, last_image)

                run_stream(
                    reader.frames(start),
                    self.processor,
                    submit=self._submitter(segmenter),
                    emit=emit,
                    max_pending=spec.max_pending,
                    previous=resume.previous_image if resume else None,
                    checkpoint=checkpoint,
                    checkpoint_every=spec.checkpoint_every,
                )
                writer.drain()
                report.concealed_frames = list(reader.corrupt_frames)
            report.status = "done"
        except PipelineError as exc:
            report.error = exc.to_dict()
        except Exception as exc:  # noqa: BLE001 - reported per video; the batch carries on
            report.error = {
                "error": type(exc).__name__, "source": spec.source, "frame_index": self.frames_done,
                "reason": str(exc) or repr(exc), "traceback": traceback.format_exc(limit=6),
            }
        finally:
            if writer is not None:
                report.outputs = writer.close()  # records emitted before an error are written too
        lost = undelivered_error(spec.source, report.outputs)
        if report.status == "done" and lost:  # a broker never took them: not done, and not skipped on a re-run
            report.status, report.error = "failed", lost
        report.frames = self.frames_done
        report.seconds = time.perf_counter() - started
        if self.processor is not None:
            stats = self.processor.stats
            report.keyframes, report.propagated, report.skipped_frames = stats.keyframes, stats.propagated, stats.skipped
            report.keyframe_reasons = dict(stats.keyframe_reasons)
            report.prompt_memory_bytes = self.processor.memory_nbytes()
        if report.status == "done":
            write_done(spec.stream_dir, spec.fingerprint, report.to_dict())
        elif resume is not None:  # resumed and failed: a re-run starts over rather than meet the same failure
            checkpoints.discard()
        return report

    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


def default_workers() -> int:
    gpus = int(ray.cluster_resources().get("GPU", 0))
    return max(1, gpus)


def segmenter_pool(
    name: str, options: dict[str, Any], workers: int, placement: str = "auto"
) -> "list[ray.actor.ActorHandle] | list[InlineSegmenter]":
    """Where keyframes are segmented: a pool of segmenter actors, or inside each stream worker.

    ``placement``: ``pool`` (actors: one GPU each where the cluster has GPUs, else one CPU each),
    ``inline`` (each stream worker builds its own segmenter), or ``auto``: inline for a
    lightweight segmenter (the default one) on a cluster without GPUs, else the pool.
    """
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if placement == "inline" or (placement == "auto" and not gpus and is_lightweight(name)):
        return [InlineSegmenter(name, dict(options))]
    if gpus and workers > gpus:
        raise PipelineError("--workers", f"{workers} segmenter workers need {workers} GPUs; the cluster has {gpus}")
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    return [SegmenterWorker.options(**resources).remote(name, options) for _ in range(workers)]


def init_ray(address: str | None) -> None:
    """Join ``address`` (or ``RAY_ADDRESS``, as Ray itself would) or start a local Ray on loopback, with this
    project importable by workers."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    worker_env = {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, runtime_env={"env_vars": worker_env}, log_to_driver=False)
        except ConnectionError as exc:
            raise PipelineError("--address", f"cannot join the Ray cluster at {address}: {exc}") from None
        return
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    # A local cluster's workers inherit the environment its raylet starts in. Given there rather than as a
    # runtime_env, it is every worker's, so the workers Ray starts ahead of time serve the job's actors:
    # a stream worker is ready in ~0.1 s instead of a fresh process's ~0.8 s.
    with _environment(worker_env):
        ray.init(include_dashboard=False, log_to_driver=False)


#: Seconds to wait for a cluster's GCS port before calling it unreachable: Ray itself retries for minutes.
CONNECT_TIMEOUT_S = 5.0


def _check_reachable(address: str) -> None:
    """A ``HOST:PORT`` address must accept a TCP connection (``auto`` and ``ray://`` are left to Ray)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise PipelineError("--address", f"no Ray cluster answers at {address} ({exc.strerror or exc})") from None


@contextlib.contextmanager
def _environment(variables: dict[str, str]) -> Iterator[None]:
    """``variables`` set in this process's environment for the duration, then restored."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
