"""Live feeds: a freshest-frame scheduler per stream, an in-process runner and the ``live`` command.

Each live stream runs three threads in this process (no Ray: a live job must react to SIGINT/SIGTERM
at once, flush its sinks and print a summary, which Ray's actors make slow and indirect):

* a **reader** thread decodes the feed (:class:`pipeline.sources.LiveReader`, which reconnects
  with backoff under the same stream) into a :class:`FreshestFrameQueue`;
* the **processing** thread runs :func:`operators.stream.run_stream` over the queue with the
  stream's one :class:`~operators.stream.StreamProcessor` (prompt memory and track ids survive a
  reconnect because the processor does), the keyframes going to a segmenter thread so optical flow
  overlaps segmentation as on Ray;
* a **sink** thread (:class:`operators.sinks.writer.SinkWriter`) writes records (RLE encoding, files,
  message queues) off the processing path.

Live scheduling: the queue holds at most ``queue_size`` frames. When processing falls behind, the
oldest frames are dropped (``dropped_queue_full``) and a frame older than ``latency_budget`` seconds
is dropped in favour of a newer one already waiting (``dropped_latency``). Every dropped frame still
gets a record, kind ``skipped`` with that reason, in frame order. ``mode="archive"`` never drops:
the reader waits for room instead.

Per stream the runner reports end-to-end latency (frame out of the decoder -> record written by every
sink) p50/p95, fps in (decoded) and out (processed), drops by cause, reconnects and status events.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import heapq
import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import cv2
import numpy as np

from operators.errors import ErrorRecord, error_record
from operators.keyframes import KeyframeConfig
from operators.annotate import default_annotator
from operators.records import FrameRecord, Instances, Prompt, PromptError
from operators.segmenters import build_segmenter, check_checkpoint, check_segmenter
from operators.sinks import StreamInfo, build_sinks
from operators.sinks.base import prepare_out_dir
from operators.sinks.delivery import undelivered_error
from operators.sinks.writer import SinkWriter
from operators.stream import StreamProcessor, run_stream, thread_submit
from pipeline.control.commands import DEFAULT_SCHEMES, KNOWN_SCHEMES, CommandHandler, SourcePolicy, derive_stream_id
from pipeline.sources import LiveFrame, LiveReader, ReconnectPolicy, is_live_source

log = logging.getLogger("pipeline.live")

Mode = Literal["live", "archive"]
DROP_QUEUE_FULL = "dropped_queue_full"
DROP_LATENCY = "dropped_latency"
#: A stream's status: connecting (opening its feed), connected (open, no frame processed yet), running,
#: reconnecting (the feed dropped; retrying with backoff), stopped, failed.
STREAM_STATUSES = ("connecting", "connected", "running", "reconnecting", "stopped", "failed")
READER_STATUS = {"connected": "connected", "disconnected": "reconnecting", "reconnected": "running"}
ANNOTATOR = default_annotator()  # draws latest_frame_jpeg


# --------------------------------------------------------------------------- scheduling


class FreshestFrameQueue:
    """A bounded frame queue between a reader and a processing loop.

    ``mode="live"``: :meth:`put` never blocks; a full queue drops its oldest frame. :meth:`get`
    returns the oldest frame unless it is older than ``latency_budget`` and a newer frame waits, in
    which case the stale ones are dropped. ``mode="archive"``: :meth:`put` waits for room, nothing
    is ever dropped. Dropped frames are handed to the consumer by :meth:`get` as
    ``(frame, cause)`` pairs, so each one can still get a record.
    """

    def __init__(self, capacity: int = 4, latency_budget: float | None = 0.5, mode: Mode = "live") -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be >= 1")
        self.capacity = capacity
        self.latency_budget = latency_budget
        self.mode = mode
        self._frames: deque[LiveFrame] = deque()
        self._dropped: list[tuple[LiveFrame, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self.drops: dict[str, int] = {DROP_QUEUE_FULL: 0, DROP_LATENCY: 0}
        self.max_depth = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: LiveFrame) -> None:
        with self._cond:
            if self.mode == "archive":
                while len(self._frames) >= self.capacity and not self._closed:
                    self._cond.wait(0.1)
            elif len(self._frames) >= self.capacity:
                self._drop(self._frames.popleft(), DROP_QUEUE_FULL)
            self._frames.append(frame)
            self.max_depth = max(self.max_depth, len(self._frames))
            self._cond.notify_all()

    def _drop(self, frame: LiveFrame, cause: str) -> None:
        self._dropped.append((frame, cause))
        self.drops[cause] += 1

    def get(self, timeout: float | None = None) -> tuple[LiveFrame | None, list[tuple[LiveFrame, str]]]:
        """(the next frame or None when closed and empty / on timeout, frames dropped since the last call)."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._frames and not self._closed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._cond.wait(left)
            frame = None
            if self._frames:
                if self.mode == "live" and self.latency_budget is not None:
                    now = time.monotonic()
                    while len(self._frames) > 1 and now - self._frames[0].captured > self.latency_budget:
                        self._drop(self._frames.popleft(), DROP_LATENCY)
                frame = self._frames.popleft()
                self._cond.notify_all()
            dropped, self._dropped = self._dropped, []
            return frame, dropped

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class LatencyStats:
    """End-to-end latencies in seconds: the last ``window`` kept for percentiles, all counted."""

    def __init__(self, window: int = 10_000) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds)
            self.count += 1

    def percentiles(self) -> dict[str, float | None]:
        with self._lock:
            values = np.fromiter(self._values, float) if self._values else None
        if values is None:
            return {"p50_ms": None, "p95_ms": None, "max_ms": None}
        p50, p95 = np.percentile(values, [50, 95])
        return {"p50_ms": round(float(p50) * 1000, 1), "p95_ms": round(float(p95) * 1000, 1),
                "max_ms": round(float(values.max()) * 1000, 1)}  # plain floats, as the JSON summary and callers want


# --------------------------------------------------------------------------- one stream


@dataclass
class LiveStreamSpec:
    """One live stream: id, URL (or file), prompts and its scheduling settings."""

    stream_id: str
    source: str
    prompts: list[Prompt]
    mode: Mode = "live"
    latency_budget: float | None = 0.5  # seconds from decode to processing before a stale frame is dropped
    queue_size: int = 4
    max_pending: int = 8  # frames waiting for a keyframe result (run_stream's bound)
    timeout: float = 10.0  # open / read timeout, seconds
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    options: dict[str, str] = field(default_factory=dict)  # demuxer options (e.g. rtsp_transport)
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)


class LiveStream:
    """Runs one :class:`LiveStreamSpec` on its own threads; see the module docstring."""

    def __init__(
        self,
        spec: LiveStreamSpec,
        sinks: Sequence[str],
        out_dir: str | Path,
        segmenter: str = "default",
        segmenter_options: dict[str, Any] | None = None,
        on_status: Callable[[dict], None] | None = None,
    ) -> None:
        self.spec = spec
        self.sink_names = list(sinks)
        self.out_dir = str(out_dir)
        self.segmenter_name = segmenter
        self.segmenter_options = dict(segmenter_options or {})
        self.on_status = on_status
        self.queue = FreshestFrameQueue(spec.queue_size, spec.latency_budget, spec.mode)
        self.latency = LatencyStats()
        self.processor: StreamProcessor | None = None
        self.reader: LiveReader | None = None
        self.status = "connecting"  # see STREAM_STATUSES
        self.error: ErrorRecord | None = None
        self.events: list[dict] = []
        self.frames_in = 0
        self.frames_processed = 0
        self.records_written = 0
        self.skipped_records: dict[str, int] = {}
        self.track_ids: set[int] = set()
        self.prompt_ids_given: set[int] = {p.prompt_id for p in spec.prompts}  # never reused within the stream
        self.prompt_ids_removed: set[int] = set()
        self.frame_size: tuple[int, int] | None = None  # (width, height), once prompts can be checked against it
        self._latest: tuple[np.ndarray, Instances] | None = None  # the last processed frame, for latest_frame_jpeg
        self.outputs: list[dict] = []
        self.started = time.monotonic()
        self.first_frame_at: float | None = None  # fps are measured from the first frame (not the open)
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
        if self.reader is not None:
            self.reader.stop()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        """Prompts already checked against :attr:`frame_size` (pipeline.control does) apply from the next frame."""
        if self.processor is None:
            raise RuntimeError(f"stream {self.spec.stream_id!r} is not connected yet")
        self.prompt_ids_given.update(p.prompt_id for p in prompts)
        self.processor.add_prompts(prompts)

    def remove_prompts(self, prompt_ids: Sequence[int]) -> None:
        if self.processor is None:
            raise RuntimeError(f"stream {self.spec.stream_id!r} is not connected yet")
        self.prompt_ids_removed.update(prompt_ids)
        self.processor.remove_prompts(prompt_ids)

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

    # -- threads ----------------------------------------------------------------------------------
    def _run(self) -> None:
        spec = self.spec
        writer: SinkWriter | None = None
        try:
            self.reader = self._open_reader()
            if self._stop.is_set():
                self.reader.stop()
            info = self.reader.info
            fps = info.fps if info.fps > 0 else 30.0
            writer = SinkWriter(build_sinks(self.sink_names, self.out_dir), name=f"sink-{spec.stream_id}",
                                source=spec.source, on_written=self._written)
            for sink in writer.sinks:
                sink.open(StreamInfo(spec.stream_id, spec.source, info.width, info.height, fps))
            keep_images = any(getattr(sink, "needs_image", False) for sink in writer.sinks)
            self.processor = StreamProcessor(spec.stream_id, spec.source, self._fitting(spec.prompts, info),
                                             keyframes=spec.keyframes, keep_images=keep_images)
            self.frame_size = (info.width, info.height)
            self._process(writer)
            self.status = "stopped" if self.error is None else "failed"
        except Exception as exc:  # noqa: BLE001 - reported in the stream's summary; other streams go on
            self.status, self.error = "failed", error_record(exc, spec.source, self.frames_in)
        finally:
            if self.reader is not None:
                self.reader.close()
            if writer is not None:
                self.outputs.extend(writer.close())
            lost = undelivered_error(spec.source, self.outputs)
            if self.status == "stopped" and lost:
                self.status, self.error = "failed", lost
            self.ended = time.monotonic()
            if self.error is not None:
                self._status({"event": "failed", "reason": self.error["reason"]})
                log.error("%s: %s", spec.stream_id, self.error["reason"])

    def _fitting(self, prompts: Sequence[Prompt], info) -> list[Prompt]:
        """The stream's first prompts that fit its frame; the others are reported (``prompt_rejected``), the
        stream runs on: they were given before its frame size was known."""
        fitting = []
        for prompt in prompts:
            try:
                prompt.validate(info.height, info.width)
                fitting.append(prompt)
            except PromptError as exc:
                self.prompt_ids_removed.add(prompt.prompt_id)
                self._status({"event": "prompt_rejected", "prompt_id": prompt.prompt_id, "reason": str(exc)})
                log.warning("%s: %s", self.spec.stream_id, exc)
        return fitting

    def _open_reader(self) -> LiveReader:
        spec = self.spec
        if not is_live_source(spec.source) and Path(spec.source).is_file():
            # A file read as a feed (for tests and replays): no reconnects, it just ends.
            spec.reconnect = ReconnectPolicy(max_attempts=0)
        return LiveReader(spec.source, options=spec.options, timeout=spec.timeout, reconnect=spec.reconnect,
                          on_status=self._status)

    def _read(self) -> None:
        try:
            for frame in self.reader.frames():
                if self.first_frame_at is None:
                    self.first_frame_at = frame.captured
                self.frames_in += 1
                self.queue.put(frame)
        except Exception as exc:  # noqa: BLE001 - the stream's error, reported when its processing ends
            self.error = error_record(exc, self.spec.source, self.frames_in)
        finally:
            self.queue.close()

    def _written(self, record: FrameRecord, captured: float) -> None:
        """Called on the sink thread once every sink took ``record``."""
        self.records_written += 1
        if record.kind != "skipped" or record.reason == "no_prompt_yet":
            self.latency.add(time.monotonic() - captured)
        else:
            self.skipped_records[record.reason] = self.skipped_records.get(record.reason, 0) + 1

    def _process(self, writer: SinkWriter) -> None:
        spec = self.spec
        processor = self.processor
        pending: dict[int, LiveFrame] = {}
        dropped: list[tuple[int, int, LiveFrame, str]] = []  # heap by frame index
        order = [0]

        def emit_dropped_before(index: float) -> None:
            while dropped and dropped[0][0] < index:
                _, _, frame, cause = heapq.heappop(dropped)
                height, width = frame.image.shape[:2]
                record = FrameRecord(spec.stream_id, frame.index, frame.pts, "skipped", Instances.empty(height, width),
                                     reason=cause)
                writer.put(record, frame.captured)

        def emit(record: FrameRecord) -> None:
            emit_dropped_before(record.frame_index)
            if record.instances is not None and len(record.instances):
                self.track_ids.update(int(t) for t in record.instances.track_ids)
            self.frames_processed += 1
            frame = pending.pop(record.frame_index)
            self._latest = (frame.image, record.instances)
            if self.status == "connected":
                self.status = "running"
            writer.put(record, frame.captured)

        def frames():
            while True:
                frame, lost = self.queue.get(timeout=0.2)
                for lost_frame, cause in lost:
                    order[0] += 1
                    heapq.heappush(dropped, (lost_frame.index, order[0], lost_frame, cause))
                if frame is None:
                    if self.queue.closed and not len(self.queue):
                        processor.drop_unreached_prompts()
                        return
                    continue
                pending[frame.index] = frame
                yield frame

        segmenter = build_segmenter(self.segmenter_name, **self.segmenter_options)
        reader_thread = threading.Thread(target=self._read, name=f"reader-{spec.stream_id}", daemon=True)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"segment-{spec.stream_id}") as pool:
            reader_thread.start()
            try:
                run_stream(frames(), processor, thread_submit(segmenter, pool), emit,
                           max_pending=spec.max_pending)
                emit_dropped_before(float("inf"))
            finally:
                self.stop()
                self.queue.close()  # an archive-mode reader waiting for room must not wait for ever
                reader_thread.join()
        writer.drain()  # raises a sink's write error

    # -- report ------------------------------------------------------------------------------------
    def report(self) -> dict:
        end = self.ended if self.ended is not None else time.monotonic()
        seconds = max(end - (self.first_frame_at or self.started), 1e-9)
        reconnects = self.reader.reconnects if self.reader is not None else 0
        processor = self.processor
        return {
            "stream_id": self.spec.stream_id,
            "source": self.spec.source,
            "mode": self.spec.mode,
            "status": self.status,
            "frame_size": list(self.frame_size) if self.frame_size else None,
            "seconds": round(seconds, 2),
            "frames_in": self.frames_in,
            "frames_processed": self.frames_processed,
            "records_written": self.records_written,
            "fps_in": round(self.frames_in / seconds, 2),
            "fps_out": round(self.frames_processed / seconds, 2),
            "drops": dict(self.queue.drops),
            "drop_rate": round(sum(self.queue.drops.values()) / self.frames_in, 4) if self.frames_in else 0.0,
            "latency": self.latency.percentiles(),
            "queue_depth": len(self.queue),
            "max_queue_depth": self.queue.max_depth,
            "reconnects": reconnects,
            "decode_errors": self.reader.decode_errors if self.reader is not None else 0,
            "keyframes": processor.stats.keyframes if processor else 0,
            "propagated": processor.stats.propagated if processor else 0,
            "keyframe_reasons": dict(processor.stats.keyframe_reasons) if processor else {},
            "prompt_memory_bytes": processor.memory_nbytes() if processor else 0,
            "track_ids": sorted(self.track_ids),
            "prompt_ids": sorted(self.prompt_ids_given - self.prompt_ids_removed),
            "prompt_ids_used": sorted(self.prompt_ids_given),
            "events": [{k: v for k, v in e.items() if k != "stream_id"} for e in self.events[-20:]],
            "outputs": self.outputs,
            "error": self.error,
        }



# --------------------------------------------------------------------------- several streams


class LiveRunner:
    """Runs several live streams until :meth:`stop`; streams can be added and removed while it runs.

    The control plane (:mod:`pipeline.control`: the HTTP API and the Redis control stream) drives a runner
    only through :meth:`add_stream`, :meth:`remove_stream`, :meth:`add_prompts`, :meth:`remove_prompts`,
    :meth:`stream_report`, :meth:`summary` and :meth:`latest_frame_jpeg`, after validating each command;
    an unknown ``stream_id`` raises KeyError.
    """

    def __init__(self, sinks: Sequence[str], out_dir: str | Path, segmenter: str = "default",
                 segmenter_options: dict[str, Any] | None = None,
                 on_status: Callable[[dict], None] | None = None) -> None:
        prepare_out_dir(out_dir)
        build_sinks(sinks, out_dir)  # fail on a bad sink name before any stream starts
        self.sinks = list(sinks)
        self.out_dir = Path(out_dir)
        self.segmenter = segmenter
        self.segmenter_options = segmenter_options
        self.on_status = on_status
        self.streams: dict[str, LiveStream] = {}
        self._stopping = threading.Event()

    def add_stream(self, spec: LiveStreamSpec) -> LiveStream:
        """Start a stream; ValueError if one of that id still runs (a stopped one's report is replaced)."""
        if spec.stream_id in self.streams and self.streams[spec.stream_id].is_alive():
            raise ValueError(f"stream {spec.stream_id!r} is already running")
        stream = LiveStream(spec, self.sinks, self.out_dir, self.segmenter, self.segmenter_options, self.on_status)
        self.streams[spec.stream_id] = stream
        return stream.start()

    def remove_stream(self, stream_id: str, timeout: float | None = None) -> dict:
        """Stop a stream, flush its sinks (waiting up to ``timeout`` s) and return its final report."""
        stream = self.streams[stream_id]
        stream.stop()
        stream.join(timeout)
        return stream.report()

    def add_prompts(self, stream_id: str, prompts: Sequence[Prompt]) -> list[int]:
        """Give a connected stream prompts checked against its frame size, with ids it has not used; they
        apply from its next frame. Returns their ids."""
        self.streams[stream_id].add_prompts(prompts)
        return [p.prompt_id for p in prompts]

    def remove_prompts(self, stream_id: str, prompt_ids: Sequence[int]) -> None:
        """Stop segmenting these prompts of a connected stream from its next frame on."""
        self.streams[stream_id].remove_prompts(prompt_ids)

    def stream_report(self, stream_id: str) -> dict:
        """One stream's report: status (:data:`STREAM_STATUSES`), counts, latency, ``frame_size``, prompt ids."""
        return self.streams[stream_id].report()

    def latest_frame_jpeg(self, stream_id: str) -> bytes | None:
        """The stream's last processed frame, annotated, as JPEG (None before its first frame)."""
        return self.streams[stream_id].latest_frame_jpeg()

    def stop(self) -> None:
        self._stopping.set()
        for stream in list(self.streams.values()):
            stream.stop()

    def wait(self, poll: float = 0.2, until_stopped: bool = False) -> None:
        """Block until :meth:`stop` is called (or every stream has ended, unless ``until_stopped``: streams
        may still be added), then join the streams."""
        while not self._stopping.is_set():
            if not until_stopped and self.streams and not any(s.is_alive() for s in self.streams.values()):
                break
            self._stopping.wait(poll)
        self.stop()
        for stream in list(self.streams.values()):
            stream.join()

    def summary(self) -> dict:
        streams = [s.report() for s in self.streams.values()]
        return {"streams": streams, "failed": [s["stream_id"] for s in streams if s["status"] == "failed"]}


# --------------------------------------------------------------------------- command line


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
    return dict(mode=args.mode, latency_budget=args.latency_budget, queue_size=args.queue_size,
                timeout=args.timeout, reconnect=ReconnectPolicy(max_attempts=args.max_reconnects), keyframes=keyframes)


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
        runner = LiveRunner(sinks, args.out, args.segmenter, options)
    except ValueError as exc:
        print(f"error: --sink: {exc}", file=sys.stderr)
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
    finally:
        for server in (control, api):
            if server is not None:
                server.stop()
        for sig, previous_handler in previous.items():
            signal.signal(sig, previous_handler)
    summary = runner.summary()
    (Path(args.out) / "live_summary.json").write_text(json.dumps(summary, indent=1))
    _print_summary(summary)
    return 1 if summary["failed"] else 0


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


# --------------------------------------------------------------------------- metrics


def serve_metrics(runner: LiveRunner, port: int, address: str = "127.0.0.1") -> None:
    """Serve Prometheus metrics for every stream of ``runner`` on ``address:port`` (a daemon thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(LiveCollector(runner))
    start_http_server(port, addr=address, registry=registry)


class LiveCollector:
    """Prometheus collector reading the runner's per-stream reports at scrape time."""

    def __init__(self, runner: LiveRunner) -> None:
        self.runner = runner

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        reports = [s.report() for s in list(self.runner.streams.values())]
        families = {
            "frames_in": CounterMetricFamily("xsam_live_frames_in", "Frames decoded", labels=["stream"]),
            "frames_processed": CounterMetricFamily("xsam_live_frames_processed", "Frames processed",
                                                    labels=["stream"]),
            "reconnects": CounterMetricFamily("xsam_live_reconnects", "Reconnects", labels=["stream"]),
            "fps_in": GaugeMetricFamily("xsam_live_fps_in", "Mean decoded fps", labels=["stream"]),
            "fps_out": GaugeMetricFamily("xsam_live_fps_out", "Mean processed fps", labels=["stream"]),
            "queue_depth": GaugeMetricFamily("xsam_live_queue_depth", "Frames waiting", labels=["stream"]),
            "prompt_memory_bytes": GaugeMetricFamily("xsam_live_memory_bytes", "Per-stream memory size",
                                                     labels=["stream"]),
        }
        drops = CounterMetricFamily("xsam_live_dropped_frames", "Frames dropped", labels=["stream", "cause"])
        latency = GaugeMetricFamily("xsam_live_latency_seconds", "End-to-end latency", labels=["stream", "quantile"])
        up = GaugeMetricFamily("xsam_live_stream_up", "1 while the stream runs", labels=["stream"])
        for r in reports:
            stream = r["stream_id"]
            for key, family in families.items():
                family.add_metric([stream], float(r[key]))
            for cause, count in r["drops"].items():
                drops.add_metric([stream, cause], float(count))
            for quantile, key in (("0.5", "p50_ms"), ("0.95", "p95_ms")):
                if r["latency"][key] is not None:
                    latency.add_metric([stream, quantile], r["latency"][key] / 1000)
            up.add_metric([stream], 1.0 if r["status"] == "running" else 0.0)
        yield from families.values()
        yield from (drops, latency, up)
