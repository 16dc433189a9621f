"""One live feed, Ray-free: a :class:`~pipeline.session.StreamSession` on the feed, hosted on a thread.

The in-process runner and the Ray stream actor both host a :class:`LiveStream`; the stream's life (sinks,
processor, snapshots and resume, drain, undelivered records, its error) is the session's, written once for
archives and feeds. What is live is the source (:class:`~pipeline.live.feed.FeedReader`: the reconnecting
reader, the freshest-frame queue and its drop records), the latency measured as every sink took a record,
and the report (:class:`LiveReport`).

Snapshots (``snapshot_every`` seconds of the feed): the session's checkpoints, ``OUT/<stream>/checkpoint.npz``
(data only, :mod:`pipeline.checkpoint`), which every node reads. A stream started again with ``resume``
continues from the latest one with its prompt memory and track ids; the frames it missed meanwhile get
``skipped`` records, reason ``worker_restarted``, and it runs the prompts its host holds now (they may have
changed after the snapshot). A feed lost before its first snapshot starts over.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from operators.annotate import default_annotator
from operators.errors import ErrorRecord, error_record
from operators.records import FrameRecord, Instances, Prompt, PromptError
from operators.segmenters import build_segmenter
from operators.stream import thread_submit
from pipeline.checkpoint import CHECKPOINT_FILE
from pipeline.live.feed import FeedReader
from pipeline.live.scheduling import (
    READER_STATUS, WORKER_RESTARTED, FreshestFrameQueue, LatencyHistogram, Mode, StreamStatus,
)
from pipeline.session import StreamSession, StreamSpec, Submit
from pipeline.sources import LiveReader, ReconnectPolicy, is_live_source

log = logging.getLogger("pipeline.live")
ANNOTATOR = default_annotator()  # draws latest_frame_jpeg
#: How a stream sends its keyframes, given its own segmenter thread: in this process or to a segmenter actor.
Submitter = Callable[[concurrent.futures.Executor], Submit]


@dataclass
class LiveStreamSpec(StreamSpec):
    """A :class:`~pipeline.session.StreamSpec` read from a live feed: its scheduling and connection settings.

    The runner fills in the stream's place and segmenter (``out_dir``, ``sinks``, ``segmenter``); its
    ``checkpoint_every`` (frames) follows from ``snapshot_every`` (seconds) and the feed's frame rate.
    ``resume``: a stream actor started again after its first one died, from the feed's latest snapshot.
    """

    out_dir: str | None = None
    sinks: list[str] = field(default_factory=list)
    max_pending: int = 8  # frames waiting for a keyframe result: a feed's latency, not an archive's throughput
    checkpoint_every: int = 0
    resume: bool = False
    mode: Mode = "live"
    latency_budget: float | None = 0.5  # seconds from decode to processing before a stale frame is dropped
    queue_size: int = 4
    timeout: float = 10.0  # open / read timeout, seconds
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    options: dict[str, str] = field(default_factory=dict)  # demuxer options (e.g. rtsp_transport)
    snapshot_every: float = 0.0  # seconds between snapshots of the stream (restartable from them); 0: none

    def placed(self, out_dir: str | Path, sinks: Sequence[str], segmenter: str) -> "LiveStreamSpec":
        """This feed written by ``sinks`` under ``out_dir``, segmented by ``segmenter``: a runner's settings."""
        fingerprint = {"live_stream": self.stream_id, "source": self.source, "segmenter": segmenter}
        return dataclasses.replace(self, out_dir=str(out_dir), sinks=list(sinks), segmenter=segmenter,
                                   fingerprint=fingerprint)


@dataclass
class LiveReport:
    """A live stream's figures, as ``GET /streams/{id}``, the metrics and ``live_summary.json`` give them."""

    stream_id: str
    source: str
    mode: Mode
    status: StreamStatus
    frame_size: tuple[int, int] | None  # (width, height) once connected: what prompts are checked against
    seconds: float
    frames_in: int
    frames_processed: int
    records_written: int
    last_frame_index: int | None  # of the last record every sink took
    fps_in: float
    fps_out: float
    drops: dict[str, int]
    drop_rate: float
    latency: dict[str, Any]  # decoded -> every sink took the record: LatencyHistogram.figures()
    queue_depth: int
    max_queue_depth: int
    reconnects: int
    decode_errors: int
    keyframes: int
    propagated: int
    keyframe_reasons: dict[str, int]
    prompt_memory_bytes: int
    track_ids: list[int]
    prompt_ids: list[int]  # its prompts now
    prompt_ids_used: list[int]  # every id it was given (never reused)
    skipped_records: dict[str, int]  # skipped records written, by reason
    events: list[dict]  # the last 20 status events
    outputs: list[dict]
    error: ErrorRecord | None
    node_id: str | None = None  # where it runs: the Ray stream actor fills these in
    actor_id: str | None = None
    pid: int | None = None  # the process it runs in (the stream actor's on Ray): for top or py-spy
    restarts: int = 0  # stream actors started again after one died (the Ray runner counts them)

    def to_dict(self) -> dict:
        """Plain JSON values (the status as its name)."""
        report = asdict(self)
        report["status"] = self.status.value
        report["frame_size"] = list(self.frame_size) if self.frame_size else None
        return report


class LiveStream:
    """Runs one :class:`LiveStreamSpec` on its own thread; see the module docstring.

    ``submitter`` sends keyframes (default: a segmenter built in this process, on the stream's segmenter
    thread); ``segmenter_options`` are that segmenter's. ``on_status`` hears the feed's events.
    """

    def __init__(self, spec: LiveStreamSpec, segmenter_options: dict[str, Any] | None = None,
                 on_status: Callable[[dict], None] | None = None, submitter: Submitter | None = None) -> None:
        self.spec = spec
        self.segmenter_options = dict(segmenter_options or {})
        self.on_status = on_status
        self.submitter = submitter or self._inline_submitter
        self.queue = FreshestFrameQueue(spec.queue_size, spec.latency_budget, spec.mode)
        self.latency = LatencyHistogram()
        self.feed: FeedReader | None = None
        self.session: StreamSession | None = None
        self.status = StreamStatus.CONNECTING
        self.error: ErrorRecord | None = None
        self.events: list[dict] = []
        self.frames_processed = 0
        self.records_written = 0
        self.last_frame_index: int | None = None
        self.skipped_records: dict[str, int] = {}
        self.track_ids: set[int] = set()
        self.prompt_ids_given: set[int] = {p.prompt_id for p in spec.prompts}  # never reused within the stream
        self.prompt_ids_removed: set[int] = set()
        self.frame_size: tuple[int, int] | None = None  # (width, height), once prompts can be checked against it
        self._latest: tuple[np.ndarray, Instances] | None = None  # the last processed frame, for latest_frame_jpeg
        self._captured: dict[int, float] = {}  # frames processed, until every sink took their record
        self.started = time.monotonic()
        self.ended: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"live-{spec.stream_id}", daemon=True)

    # -- control ----------------------------------------------------------------------------------
    def start(self) -> "LiveStream":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading; frames already decoded are processed and every sink is flushed."""
        self._stop.set()
        if self.feed is not None:
            self.feed.stop()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        """Prompts already checked against :attr:`frame_size` (pipeline.control does) apply from the next frame."""
        self._connected().add_prompts(prompts)
        self.prompt_ids_given.update(p.prompt_id for p in prompts)

    def remove_prompts(self, prompt_ids: Sequence[int]) -> None:
        self._connected().remove_prompts(prompt_ids)
        self.prompt_ids_removed.update(prompt_ids)

    def _connected(self) -> StreamSession:
        if self.session is None or self.session.processor is None:
            raise RuntimeError(f"stream {self.spec.stream_id!r} is not connected yet")
        return self.session

    def latest_frame_jpeg(self) -> bytes | None:
        """The last processed frame with its instances drawn, as JPEG; None before the first one."""
        latest = self._latest
        if latest is None:
            return None
        image, instances = latest
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(ANNOTATOR.annotate(image, instances), cv2.COLOR_RGB2BGR))
        return jpeg.tobytes() if ok else None

    def _status(self, event: dict) -> None:
        event = {"stream_id": self.spec.stream_id, "time": time.time(), **event}
        self.status = READER_STATUS.get(event["event"], self.status)
        self.events.append(event)
        if self.on_status is not None:
            self.on_status(event)

    # -- the stream -------------------------------------------------------------------------------
    def _run(self) -> None:
        spec = self.spec
        try:
            reader = LiveReader(spec.source, options=spec.options, timeout=spec.timeout, on_status=self._status,
                                reconnect=spec.reconnect if is_live_source(spec.source) else ReconnectPolicy(max_attempts=0))
            snapshot = spec.stream_dir / CHECKPOINT_FILE
            restarted_at = snapshot.stat().st_mtime if spec.resume and snapshot.exists() else None
            if not spec.resume:
                snapshot.unlink(missing_ok=True)  # an earlier run's: this feed starts afresh
            self.feed = FeedReader(reader, self.queue, restarted_at, self._resumed)
            if self._stop.is_set():
                self.feed.stop()
            info = reader.info
            self.frame_size = (info.width, info.height)
            every = max(1, round(spec.snapshot_every * self.feed.fps)) if spec.snapshot_every else 0
            session_spec = dataclasses.replace(spec, prompts=self._fitting(spec.prompts, info.height, info.width),
                                               checkpoint_every=every)
            with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"segment-{spec.stream_id}") as thread:
                self.session = StreamSession(session_spec, lambda: self.submitter(thread), reader=self.feed,
                                             open_ended=True, on_written=self._written)
                for record in self.session.records():
                    self._processed(record)
            report = self.session.report
            self.error = report.error
            self.status = StreamStatus.STOPPED if report.status == "done" else StreamStatus.FAILED
        except Exception as exc:  # noqa: BLE001 - reported in the stream's summary; other streams go on
            self.status, self.error = StreamStatus.FAILED, error_record(exc, spec.source, 0)
        finally:
            if self.feed is not None:
                self.feed.close()
            self.ended = time.monotonic()
            if self.error is not None:
                self._status({"event": "failed", "reason": self.error["reason"]})
                log.error("%s: %s", spec.stream_id, self.error["reason"])

    def _inline_submitter(self, keyframe_thread: concurrent.futures.Executor) -> Submit:
        """Keyframes on this stream's segmenter thread, with a segmenter of its own."""
        return thread_submit(build_segmenter(self.spec.segmenter, **self.segmenter_options), keyframe_thread)

    def _resumed(self) -> None:
        """Past a restart's gap: the feed moved on, so its next frame is segmented rather than the snapshot warped."""
        self.session.processor.policy.pending_reason = WORKER_RESTARTED
        self._status({"event": WORKER_RESTARTED, "skipped_frames": list(self.feed.gap)})

    def _fitting(self, prompts: Sequence[Prompt], height: int, width: int) -> list[Prompt]:
        """The stream's first prompts that fit its frame; the others are reported (``prompt_rejected``), the
        stream runs on: they were given before its frame size was known."""
        fitting = []
        for prompt in prompts:
            try:
                prompt.validate(height, width)
                fitting.append(prompt)
            except PromptError as exc:
                self.prompt_ids_removed.add(prompt.prompt_id)
                self._status({"event": "prompt_rejected", "prompt_id": prompt.prompt_id, "reason": str(exc)})
        return fitting

    def _processed(self, record: FrameRecord) -> None:
        """A record out of the session (its sinks write it next)."""
        taken = self.feed.take(record.frame_index)
        if taken is None:  # a dropped frame's
            return
        captured, image = taken
        self._captured[record.frame_index] = captured
        if record.instances is not None and len(record.instances):
            self.track_ids.update(int(t) for t in record.instances.track_ids)
        self.frames_processed += 1
        self._latest = (image, record.instances)
        if self.status == StreamStatus.CONNECTED:
            self.status = StreamStatus.RUNNING

    def _written(self, record: FrameRecord, _meta: object) -> None:
        """Called on the sink thread once every sink took ``record``."""
        self.records_written += 1
        self.last_frame_index = record.frame_index
        captured = self._captured.pop(record.frame_index, None)
        if captured is not None and (record.kind != "skipped" or record.reason == "no_prompt_yet"):
            self.latency.add(time.monotonic() - captured)
        if record.kind == "skipped" and record.reason != "no_prompt_yet":
            self.skipped_records[record.reason] = self.skipped_records.get(record.reason, 0) + 1

    # -- report ------------------------------------------------------------------------------------
    def report(self) -> LiveReport:
        feed, session = self.feed, self.session
        processor = session.processor if session is not None else None
        frames_in = feed.frames_in if feed is not None else 0
        end = self.ended if self.ended is not None else time.monotonic()
        seconds = max(end - ((feed.first_frame_at if feed is not None else None) or self.started), 1e-9)
        stats = processor.stats if processor is not None else None
        reader = feed.reader if feed is not None else None
        return LiveReport(
            stream_id=self.spec.stream_id, source=self.spec.source, mode=self.spec.mode, status=self.status,
            frame_size=self.frame_size, seconds=round(seconds, 2), frames_in=frames_in,
            frames_processed=self.frames_processed, records_written=self.records_written,
            last_frame_index=self.last_frame_index, fps_in=round(frames_in / seconds, 2),
            fps_out=round(self.frames_processed / seconds, 2), drops=dict(self.queue.drops),
            drop_rate=round(sum(self.queue.drops.values()) / frames_in, 4) if frames_in else 0.0,
            latency=self.latency.figures(), queue_depth=len(self.queue), max_queue_depth=self.queue.max_depth,
            reconnects=reader.reconnects if reader is not None else 0,
            decode_errors=reader.decode_errors if reader is not None else 0,
            keyframes=stats.keyframes if stats else 0, propagated=stats.propagated if stats else 0,
            keyframe_reasons=dict(stats.keyframe_reasons) if stats else {},
            prompt_memory_bytes=processor.memory_nbytes() if processor is not None else 0,
            track_ids=sorted(self.track_ids), prompt_ids=sorted(self.prompt_ids_given - self.prompt_ids_removed),
            prompt_ids_used=sorted(self.prompt_ids_given), skipped_records=dict(self.skipped_records),
            events=[{k: v for k, v in e.items() if k != "stream_id"} for e in self.events[-20:]],
            outputs=list(session.report.outputs) if session is not None else [], error=self.error, pid=os.getpid())
