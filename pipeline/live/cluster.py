"""The Ray live runtime: each feed in a stream actor placed over the cluster's nodes, restarted where it dies.

A :class:`LiveStreamActor` hosts one :class:`~pipeline.live.stream.LiveStream` (reader, processing and sink
threads in the actor's process); its keyframes go to the shared segmenter pool or to a segmenter inline
(:func:`pipeline.runtime.segmenter_pool`, ``--segmenter-placement``). Feeds go one per node in turn, the
least loaded node first, hard-pinned as the archive's stream workers are (Ray packs zero-CPU actors).

The driver (:class:`RayLiveRunner`) asks every feed's actor for its report twice a second. An actor that
died (its process killed, its node lost) is started again on another live node from the feed's latest
snapshot (``OUT/<stream>/checkpoint.npz``, data only), with the prompts it had: the same track ids go on
after a gap of ``skipped`` records, reason ``worker_restarted``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from operators.errors import error_record
from operators.records import Prompt
from operators.sinks import build_sinks
from operators.output_files import prepare_out_dir
from pipeline.live.scheduling import ENDED, StreamStatus
from pipeline.live.stream import LiveReport, LiveStream, LiveStreamSpec
from pipeline.runtime import InlineSegmenter, init_ray, limit_threads, remote_submit, segmenter_pool

log = logging.getLogger("pipeline.live")
#: Seconds between the driver's looks at every feed (a dead actor is noticed within about this).
WATCH_SECONDS = 0.5
#: Seconds a call to a live actor may take before the driver reports the feed from its last report.
CALL_TIMEOUT_S = 5.0
#: Ray starts its workers at nice 15 (its ``worker_niceness``), so batch work yields to the driver and the raylet.
#: A live feed is bound by latency: at nice 15 it gets about 1/28 of a core against each busy process at the
#: normal priority (the feeds' ffmpeg, Ray's agents, another user), so its actor starts at 0. Two 640x480 feeds
#: on 2 cores with one busy process beside them: p95 latency 550-800 ms at nice 15, 50 ms at 0 (BENCHMARKS.md,
#: Live feeds). A worker of its own: 0.8 s to start instead of a pre-started one's 0.1 s, once per feed.
LIVE_ACTOR_ENV = {"env_vars": {"RAY_worker_niceness": "0"}}


@ray.remote(max_restarts=0, max_concurrency=8)
class LiveStreamActor:
    """One live feed's :class:`LiveStream`; the driver restarts it (``resume``), not Ray."""

    def __init__(self, spec: LiveStreamSpec, segmenter: "ray.actor.ActorHandle | InlineSegmenter") -> None:
        limit_threads()
        inline = isinstance(segmenter, InlineSegmenter)
        context = ray.get_runtime_context()
        self.node_id, self.actor_id = context.get_node_id(), context.get_actor_id()
        self.stream = LiveStream(spec, segmenter.options if inline else None,
                                 submitter=None if inline else lambda _thread: remote_submit(segmenter)).start()

    def report(self) -> LiveReport:
        return dataclasses.replace(self.stream.report(), node_id=self.node_id, actor_id=self.actor_id)

    def stop(self) -> None:
        self.stream.stop()

    def join(self, timeout: float | None) -> LiveReport:
        """Wait for the stream to end (its sinks flushed) and return its report."""
        self.stream.join(timeout)
        return self.report()

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        self.stream.add_prompts(prompts)

    def remove_prompts(self, prompt_ids: Sequence[int]) -> None:
        self.stream.remove_prompts(prompt_ids)

    def latest_frame_jpeg(self) -> bytes | None:
        return self.stream.latest_frame_jpeg()


@dataclass
class _Feed:
    """The driver's view of one feed: what restarts it, and its last known report."""

    spec: LiveStreamSpec  # placed: its sinks, folder and segmenter
    actor: "ray.actor.ActorHandle"
    node: str | None
    prompts: list[Prompt]
    last: LiveReport
    final: LiveReport | None = None  # its report once it ended
    restarts: int = 0


class RayLiveRunner:
    """Runs live feeds in Ray stream actors until :meth:`stop`; the interface of :class:`pipeline.live.LiveRunner`.

    ``address``: join that Ray cluster, else start a local one (as ``run`` does); ``placement`` and
    ``workers``: the segmenter pool's (:func:`pipeline.runtime.segmenter_pool`).
    """

    def __init__(self, sinks: Sequence[str], out_dir: str | Path, segmenter: str = "default",
                 segmenter_options: dict[str, Any] | None = None, placement: str = "auto",
                 address: str | None = None, workers: int = 1) -> None:
        prepare_out_dir(out_dir)
        build_sinks(sinks, out_dir)  # fail on a bad sink name before any stream starts
        self.sinks, self.out_dir, self.segmenter = list(sinks), str(out_dir), segmenter
        self._started_ray = not ray.is_initialized()
        init_ray(address)
        self.pool = segmenter_pool(segmenter, dict(segmenter_options or {}), workers, placement)
        self.streams: dict[str, _Feed] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="live-watch", daemon=True)
        self._watcher.start()

    # -- placement --------------------------------------------------------------------------------
    def _start(self, spec: LiveStreamSpec, avoid: str | None = None) -> tuple["ray.actor.ActorHandle", str | None]:
        """A stream actor for ``spec`` on the live node running the fewest feeds (never ``avoid``, its lost one)."""
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0
                 and n["NodeID"] != avoid]
        placed = [feed.node for feed in self.streams.values() if feed.final is None]
        node = min(nodes, key=placed.count) if nodes else None
        strategy = "SPREAD" if node is None else NodeAffinitySchedulingStrategy(node, soft=avoid is not None)
        segmenter = self.pool[len(self.streams) % len(self.pool)]
        actor = LiveStreamActor.options(num_cpus=0, scheduling_strategy=strategy,
                                        runtime_env=LIVE_ACTOR_ENV).remote(spec, segmenter)
        return actor, node

    # -- the live service's interface (pipeline.control) ------------------------------------------
    def add_stream(self, spec: LiveStreamSpec) -> None:
        with self._lock:
            if spec.stream_id in self.streams and self.streams[spec.stream_id].final is None:
                raise ValueError(f"stream {spec.stream_id!r} is already running")
            spec = spec.placed(self.out_dir, self.sinks, self.segmenter)
            actor, node = self._start(spec)
            waiting = dataclasses.replace(LiveStream(spec).report(), node_id=node, pid=None)
            self.streams[spec.stream_id] = _Feed(spec, actor, node, list(spec.prompts), waiting)

    def remove_stream(self, stream_id: str, timeout: float | None = None) -> dict:
        feed = self.streams[stream_id]
        feed.actor.stop.remote()
        wait_s = None if timeout is None else timeout + CALL_TIMEOUT_S
        return self._finish(feed, feed.actor.join.remote(timeout), wait_s).to_dict()

    def add_prompts(self, stream_id: str, prompts: Sequence[Prompt]) -> list[int]:
        feed = self.streams[stream_id]
        ray.get(feed.actor.add_prompts.remote(list(prompts)), timeout=CALL_TIMEOUT_S)
        feed.prompts.extend(prompts)
        return [p.prompt_id for p in prompts]

    def remove_prompts(self, stream_id: str, prompt_ids: Sequence[int]) -> None:
        feed = self.streams[stream_id]
        ray.get(feed.actor.remove_prompts.remote(list(prompt_ids)), timeout=CALL_TIMEOUT_S)
        feed.prompts = [p for p in feed.prompts if p.prompt_id not in set(prompt_ids)]

    def stream_report(self, stream_id: str) -> dict:
        return self._report(self.streams[stream_id]).to_dict()

    def _report(self, feed: _Feed) -> LiveReport:
        if feed.final is not None:
            return feed.final
        try:
            self._seen(feed, ray.get(feed.actor.report.remote(), timeout=CALL_TIMEOUT_S))
        except (ray.exceptions.RayError, TimeoutError):
            pass  # being restarted (the watcher does it): its last report, marked so
        return feed.last

    def latest_frame_jpeg(self, stream_id: str) -> bytes | None:
        try:
            return ray.get(self.streams[stream_id].actor.latest_frame_jpeg.remote(), timeout=CALL_TIMEOUT_S)
        except (ray.exceptions.RayError, TimeoutError):
            return None

    def summary(self) -> dict:
        streams = [self._report(feed).to_dict() for feed in list(self.streams.values())]
        return {"streams": streams, "failed": [s["stream_id"] for s in streams if s["status"] == "failed"]}

    def stop(self) -> None:
        self._stopping.set()
        for feed in list(self.streams.values()):
            if feed.final is None:
                feed.actor.stop.remote()

    def wait(self, poll: float = 0.2, until_stopped: bool = False, timeout: float = 30.0) -> None:
        """Block until :meth:`stop` (or every feed has ended, unless ``until_stopped``), then collect every feed's
        final report, each actor's sinks flushed (``timeout`` seconds for them all)."""
        while not self._stopping.is_set():
            if not until_stopped and self.streams and all(f.final is not None for f in self.streams.values()):
                break
            self._stopping.wait(poll)
        self.stop()
        self._watcher.join()
        ended = {feed.actor.join.remote(timeout): feed for feed in self.streams.values() if feed.final is None}
        if ended:
            ray.wait(list(ended), num_returns=len(ended), timeout=timeout + CALL_TIMEOUT_S)
        for ref, feed in ended.items():
            self._finish(feed, ref, 0.0)

    def shutdown(self) -> None:
        """Stop the actors (and the local Ray this runner started)."""
        self._stopping.set()
        for feed in self.streams.values():
            try:
                ray.kill(feed.actor)
            except Exception:  # noqa: BLE001 - an actor lost with its node cannot even be reached to stop
                pass
        if self._started_ray:
            ray.shutdown()

    # -- failover ---------------------------------------------------------------------------------
    def _seen(self, feed: _Feed, report: LiveReport) -> None:
        feed.last = dataclasses.replace(report, restarts=feed.restarts)
        if report.status in ENDED and feed.final is None:
            feed.final = feed.last

    def _finish(self, feed: _Feed, joined: "ray.ObjectRef", wait_s: float | None) -> LiveReport:
        """The feed's final report from its actor's ``join`` call, answered within ``wait_s`` seconds."""
        if feed.final is None:
            try:
                self._seen(feed, ray.get(joined, timeout=wait_s))
            except (ray.exceptions.RayError, TimeoutError) as exc:
                reason = f"its stream actor did not stop: {type(exc).__name__}"
                feed.final = dataclasses.replace(feed.last, status=StreamStatus.FAILED,
                                                 error=error_record(exc, feed.spec.source, reason=reason))
        return feed.final

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_SECONDS):
            refs = {stream_id: feed.actor.report.remote() for stream_id, feed in list(self.streams.items())
                    if feed.final is None}
            for stream_id, ref in refs.items():
                feed = self.streams[stream_id]
                try:
                    self._seen(feed, ray.get(ref, timeout=CALL_TIMEOUT_S))
                except ray.exceptions.ActorDiedError as exc:
                    if not self._stopping.is_set():
                        self._restart(feed, exc)
                except (ray.exceptions.RayError, TimeoutError):
                    continue  # unreachable for now (a node going away): looked at again next round

    def _restart(self, feed: _Feed, cause: Exception) -> None:
        """Start a dead feed's actor again, away from its node, from its latest snapshot."""
        with self._lock:
            lost = feed.last.node_id or feed.node
            spec = dataclasses.replace(feed.spec, prompts=list(feed.prompts), resume=True)
            feed.restarts += 1
            feed.actor, feed.node = self._start(spec, avoid=lost)
            feed.last = dataclasses.replace(feed.last, status=StreamStatus.RECONNECTING, restarts=feed.restarts,
                                            node_id=feed.node, actor_id=None, pid=None)
            log.warning("%s: its stream actor died (%s); restarted (restart %d)", feed.spec.stream_id,
                        type(cause).__name__, feed.restarts)
