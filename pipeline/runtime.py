"""Ray actors: one stateful actor per stream and a shared pool of segmenter actors.

- :class:`SegmenterWorker` holds a model and nothing about any stream: every call
  carries the stream's prompt memory, so any worker can serve any stream and a
  restarted worker simply retries the call.
- :class:`StreamWorker` hosts one :class:`pipeline.session.StreamSession` at a time (decode, the
  stream's state, sinks, checkpoints, its report) and sends its keyframes to its segmenter; at most
  one keyframe and ``max_pending`` frames are in flight.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import ray

from operators.errors import InvalidPromptError, PipelineError
from operators.records import Prompt, PromptError
from operators.segmenters import Segmenter, build_segmenter, is_lightweight
from operators.segmenters.base import PromptMemory
from operators.stream import Future, KeyframeRequest, KeyframeResult, run_keyframes, thread_submit
from pipeline.batching import MicroBatcher
from pipeline.reaper import reap_with_driver
from pipeline.session import StreamReport, StreamSession, StreamSpec
from pipeline.sources import open_video


def prompt_fingerprint(prompts: Sequence[Prompt]) -> str:
    """A stable hash of the prompts, so a re-run with other prompts does not skip a video."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(repr((p.prompt_id, p.kind, p.frame_index, p.points, p.box)).encode())
        if p.mask is not None:
            digest.update(np.packbits(p.mask).tobytes())
    return digest.hexdigest()[:16]


def limit_threads(threads: int = 1) -> None:
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
        limit_threads()
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


def remote_submit(segmenter: "ray.actor.ActorHandle") -> Callable[[KeyframeRequest], Future]:
    """Keyframes to a shared :class:`SegmenterWorker`; its errors surface as the model's own."""
    return lambda request: _RayFuture(segmenter.keyframe.remote(request))


@ray.remote(max_concurrency=4)
class StreamWorker:
    """Runs streams one after another: decode, keyframe schedule, per-stream memory and tracks.

    Long-lived and reused for every video of a job, so process start-up is paid once per worker rather
    than once per video. Its sinks write on a thread of this process (:class:`SinkWriter`): records
    (masks, and images for the MP4 sink) are never pickled or sent anywhere to be written.
    """

    def __init__(self) -> None:
        limit_threads()
        self.session: StreamSession | None = None  # the video it runs, or ran last
        self.inline: tuple[InlineSegmenter, Segmenter] | None = None  # built once, kept for the next video
        self.keyframe_thread = ThreadPoolExecutor(1, thread_name_prefix="keyframes")  # the inline segmenter's
        self.threads = 1  # cores the job lends this worker (use_threads)

    def _submitter(self, segmenter: "ray.actor.ActorHandle | InlineSegmenter") -> Callable[[KeyframeRequest], Future]:
        if not isinstance(segmenter, InlineSegmenter):
            return remote_submit(segmenter)
        if self.inline is None or self.inline[0] != segmenter:
            self.inline = (segmenter, build_segmenter(segmenter.name, **segmenter.options))
        # On its own thread while the job lends this worker more than one core (one video alone: 64.5 / 65.4 ->
        # 71.2 / 72.1 fps); in the stream's thread while every core has a stream of its own.
        return thread_submit(self.inline[1], self.keyframe_thread, overlap=lambda: self.threads > 1)

    def progress(self) -> tuple[int, int | None]:
        session = self.session
        return (session.frames_done, session.expected) if session is not None else (0, None)

    def use_threads(self, threads: int) -> None:
        """Take more cores for OpenCV's (and torch's) parallel loops when the job leaves some idle, or fewer."""
        limit_threads(threads)
        self.threads = threads

    def run(self, spec: StreamSpec, segmenter: "ray.actor.ActorHandle | InlineSegmenter", threads: int = 1) -> StreamReport:
        """Process one video; ``threads``: the cores the job lends this worker to begin with (:meth:`use_threads`)."""
        self.use_threads(threads)
        self.session = StreamSession(spec, lambda: self._submitter(segmenter))
        return self.session.run()

    def encode_prompts(self, spec: StreamSpec, segmenter: "ray.actor.ActorHandle | InlineSegmenter") -> list[PromptMemory]:
        """The memories of ``spec``'s prompts, each frame's prompts encoded on that frame as its stream's
        keyframe would: what every later chunk of a split video starts from, encoded once."""
        by_frame: dict[int, list[Prompt]] = {}
        for prompt in spec.prompts:
            by_frame.setdefault(prompt.frame_index, []).append(prompt)
        submit, memories = self._submitter(segmenter), []
        with open_video(spec.source, backend=spec.decoder, threads=spec.decode_threads,
                        folder_fps=spec.folder_fps) as reader:
            for frame in reader.frames(min(by_frame, default=0)):
                due = by_frame.pop(frame.index, [])
                for prompt in due:
                    try:
                        prompt.validate(*frame.image.shape[:2])
                    except PromptError as exc:
                        raise InvalidPromptError(spec.source, str(exc), frame.index) from None
                if due:
                    memories += submit(KeyframeRequest(frame.index, frame.image, [], due)).result().memories
                if not by_frame:
                    break
        return memories

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
    reap_with_driver()  # what of the cluster outlives a killed driver goes too


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
