"""One stream from its source to its sinks, without Ray: the session users open and the runtime hosts.

:class:`StreamSession` runs a stream's whole life once: open the source, build and open the sinks, resume
from a checkpoint where one is left, run :func:`operators.stream.stream_records`, drain and close the sinks,
check that brokers took every record, and end in one :class:`StreamReport` whose error, if any, is one
:class:`~operators.errors.ErrorRecord`. Its records come out as a generator, so a program can watch them
and add prompts on any frame while the stream runs::

    session = StreamSession.open("clip.mp4", segmenter="default")
    session.add_prompts(["box:10,10,50,50"], frame=0)
    for record in session:
        ...

The archive runtime (:class:`pipeline.runtime.StreamWorker`) hosts the same object with a remote
segmenter; what it is given (segmenter calls, sinks, the reader) is injected, so a live host passes its own
reader (a freshest-frame queue is another frame source) the same way.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from operators.association import AssociationConfig
from operators.chunking import Chunk
from operators.errors import ErrorRecord, InvalidPromptError, error_record
from operators.keyframes import KeyframeConfig
from operators.records import FrameRecord, Prompt, PromptError
from operators.segmenters import build_segmenter, check_segmenter
from operators.segmenters.base import PromptMemory
from operators.sinks import Sink, StreamInfo, build_sinks, file_sinks
from operators.output_files import stream_dir
from operators.sinks.delivery import undelivered_error
from operators.sinks.writer import SinkWriter
from operators.stream import MAX_PENDING, Future, KeyframeRequest, StreamProcessor, local_submit, stream_records
from pipeline.checkpoint import CHECKPOINT_EVERY, StreamCheckpoints, write_done
from pipeline.prompts import parse_prompts
from pipeline.sources import ARRAY_SOURCE, DEFAULT_FOLDER_FPS, ArrayReader, VideoReader, open_video

#: Sends one keyframe to a segmenter: in this process, on a thread, or to a Ray actor.
Submit = Callable[[KeyframeRequest], Future]


@dataclass
class StreamSpec:
    """What one stream needs: its id, source, prompts and settings."""

    stream_id: str
    source: str
    prompts: list[Prompt]
    out_dir: str | None  # where its sinks, checkpoints and done.json go; None: nowhere (records only)
    sinks: list[str]
    segmenter: str = "default"  # its name: its prompt memory type restores checkpoints
    decoder: str = "pyav"
    keyframes: KeyframeConfig = field(default_factory=KeyframeConfig)
    association: AssociationConfig = field(default_factory=AssociationConfig)
    max_pending: int = MAX_PENDING
    fingerprint: dict[str, Any] = field(default_factory=dict)
    checkpoint_every: int = CHECKPOINT_EVERY  # frames between stream checkpoints; 0 disables them
    decode_threads: int = 0  # FFmpeg decoder threads; 0 lets FFmpeg choose
    folder_fps: float = DEFAULT_FOLDER_FPS  # a frame folder's frame rate (its pts are index / fps)
    resume: bool = True  # continue from a checkpoint left by an earlier run
    chunk: Chunk | None = None  # one part of a video split over several workers (pipeline.split); None: all of it
    # A later chunk's start: the prompts' memories, encoded once for every chunk (its ``prompts`` are then none).
    start_memories: list[PromptMemory] = field(default_factory=list)

    @property
    def sink_place(self) -> tuple[Path, str]:
        """Where its sinks write: a folder and the stream's name in it (a chunk's: its own, inside its video's)."""
        if self.out_dir is None:
            raise ValueError(f"stream {self.stream_id!r} has no output folder")
        if self.chunk is None:
            return Path(self.out_dir), self.stream_id
        return Path(self.out_dir) / self.stream_id / CHUNKS_FOLDER, self.chunk.label

    @property
    def stream_dir(self) -> Path:
        return Path.joinpath(*self.sink_place)

    @property
    def work_id(self) -> str:
        """The video's stream id, or a chunk's ``<stream id>#<chunk>``: what the job schedules and retries."""
        return self.stream_id if self.chunk is None else f"{self.stream_id}#{self.chunk.label}"


#: A split video's chunks' outputs, checkpoints and done.json, until they are joined into the video's.
CHUNKS_FOLDER = "chunks"


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
    error: ErrorRecord | None = None
    attempts: int = 1  # runs of this video; more than 1 when its stream worker died and it ran again
    resumed_from: int | None = None  # the frame a checkpoint let this run start at
    chunks: list[dict] = field(default_factory=list)  # a split video's: each chunk's frames, attempts, resume
    concealed_frames: list[int] = field(default_factory=list)  # decoded from damaged data, patched by FFmpeg
    warnings: list[str] = field(default_factory=list)  # what the user should know though the video did not fail

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "fps": round(self.fps, 2)}


#: What :meth:`StreamSession.open` reads: a video file or frame folder, a reader, or an iterable of RGB frames.
Source = str | Path | VideoReader | Iterable[np.ndarray]
#: A prompt as a :class:`Prompt` or a command-line spec (``box:10,10,50,50``, ``point:120,80@5``).
PromptLike = Prompt | str


class StreamSession:
    """One stream, run once: iterate it for its records (or :meth:`run` it for its report only).

    ``submit`` builds the keyframe call when the stream starts (so a segmenter that cannot be built is the
    stream's error, reported like any other); ``sinks`` are sink objects written next to ``spec.sinks``
    (names, built under ``spec.out_dir``); ``reader`` replaces opening ``spec.source``: a live host's reader
    over its freshest-frame queue, whose ``frames()`` may yield :class:`~operators.stream.DroppedFrame`s.
    ``open_ended``: the source may end anywhere (a feed that is stopped), so prompts on frames it never
    reached are dropped rather than an error, and its checkpoints (snapshots) are saved whatever a broker sink
    still holds (its passed frames never come back). ``on_written(record, None)`` runs on the sink thread once
    every sink took ``record`` (a live host measures latency there).
    """

    def __init__(self, spec: StreamSpec, submit: Callable[[], Submit], *, sinks: Sequence[Sink] = (),
                 reader: VideoReader | None = None, open_ended: bool = False,
                 on_written: Callable[[FrameRecord, Any], None] | None = None) -> None:
        self.spec = spec
        self.report = StreamReport(spec.stream_id, spec.source, status="failed")
        self.processor: StreamProcessor | None = None
        self.frames_done = 0
        self.expected: int | None = None
        self.frame_size: tuple[int, int] | None = None  # (height, width), once the source is open
        self._submit, self._sink_objects, self._reader = submit, list(sinks), reader
        self._open_ended, self._on_written = open_ended, on_written
        self._added: list[Prompt] = []  # given before the processor exists
        self._prompt_ids = {p.prompt_id for p in spec.prompts}
        self._started = False
        self.failure: BaseException | None = None  # what ended the stream early, raised by iteration

    @classmethod
    def open(cls, source: Source, segmenter: str = "default", *, prompts: Sequence[PromptLike] = (),
             sinks: Sequence[str | Sink] = (), out_dir: str | Path | None = None, stream_id: str | None = None,
             segmenter_options: dict[str, Any] | None = None, fps: float = DEFAULT_FOLDER_FPS,
             keyframes: KeyframeConfig | None = None, association: AssociationConfig | None = None,
             decoder: str = "pyav") -> "StreamSession":
        """A session on ``source`` in this process. ``sinks``: names (``jsonl``, ``png``, ``mp4`` written
        under ``out_dir``; broker URLs, which need none) and sink objects with their own options; ``fps``
        times a frame folder's or an iterable's frames. Keyframes are segmented in this thread: a record is
        out before the next frame is decoded, so prompts added on seeing frame ``k`` apply from frame ``k + 1``."""
        names = [sink for sink in sinks if isinstance(sink, str)]
        if (files := file_sinks(names)) and out_dir is None:
            raise ValueError(f"sinks {', '.join(files)} write under an output folder: give out_dir")
        objects = [sink for sink in sinks if not isinstance(sink, str)]
        for sink in objects:
            if not isinstance(sink, Sink):
                raise TypeError(f"{type(sink).__name__} is not a sink: it needs open, write, close and needs_image")
        options = dict(segmenter_options or {})
        check_segmenter(segmenter, options)
        reader = None
        if not isinstance(source, (str, Path)):
            reader = source if isinstance(source, VideoReader) else ArrayReader(source, fps)
        name = reader.info.path if reader is not None else str(source)
        spec = StreamSpec(
            stream_id or (Path(name).stem if reader is None or name != ARRAY_SOURCE else "frames"), name, [],
            None if out_dir is None else str(out_dir), names, segmenter=segmenter, decoder=decoder,
            keyframes=keyframes or KeyframeConfig(), association=association or AssociationConfig(),
            checkpoint_every=0, folder_fps=fps, resume=False)
        session = cls(spec, lambda: local_submit(build_segmenter(segmenter, **options)), sinks=objects, reader=reader)
        if prompts:
            session.add_prompts(prompts)
        return session

    # -- prompts -----------------------------------------------------------------------------
    def add_prompts(self, prompts: Sequence[PromptLike], frame: int | None = None) -> list[Prompt]:
        """Add prompts on ``frame`` (each one's own frame if None; a frame already passed means the next one),
        before or while the stream runs; returns them with their ids (a spec string takes the next free id).
        A prompt that cannot fit the frame or reuses an id raises :class:`InvalidPromptError` here and the
        stream runs on."""
        built: list[Prompt] = []
        for item in prompts:
            taken = self._prompt_ids | {p.prompt_id for p in built}
            new = [item] if isinstance(item, Prompt) else parse_prompts(item, max(taken, default=-1) + 1)
            try:
                built.extend(new if frame is None else [p.with_frame(frame) for p in new])
            except PromptError as exc:
                raise InvalidPromptError(self.spec.source, str(exc), frame) from None
        for prompt in built:
            if prompt.prompt_id in self._prompt_ids or sum(p.prompt_id == prompt.prompt_id for p in built) > 1:
                raise InvalidPromptError(self.spec.source, f"prompt id {prompt.prompt_id} is already in use")
            if self.frame_size is not None:
                try:
                    prompt.validate(*self.frame_size)
                except PromptError as exc:
                    raise InvalidPromptError(self.spec.source, str(exc), prompt.frame_index) from None
        self._prompt_ids.update(p.prompt_id for p in built)
        if self.processor is None:
            self._added.extend(built)
        else:
            self.processor.add_prompts(built)
        return built

    def remove_prompts(self, prompt_ids: Iterable[int]) -> None:
        """Stop segmenting these prompts from the next frame on (their ids stay used)."""
        ids = set(prompt_ids)
        if self.processor is None:
            self._added = [p for p in self._added if p.prompt_id not in ids]
        else:
            self.processor.remove_prompts(ids)

    # -- the stream --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[FrameRecord]:
        """Every frame's record in order; the error that ended the stream early is raised after its records
        (the report has it too)."""
        yield from self.records()
        if self.failure is not None:
            raise self.failure

    def run(self) -> StreamReport:
        """Run the stream to its end for the report; an error is the report's, not raised."""
        for _ in self.records():
            pass
        return self.report

    def records(self) -> Iterator[FrameRecord]:
        """The stream's records as it runs; errors end it and go in :attr:`report` (and :attr:`failure`)."""
        if self._started:
            raise RuntimeError(f"stream {self.spec.stream_id!r} already ran: a session runs once")
        self._started = True
        spec, report = self.spec, self.report
        started = time.perf_counter()
        checkpoints = None if spec.out_dir is None else StreamCheckpoints.of_segmenter(
            spec.stream_dir, spec.fingerprint, spec.segmenter, report.warnings.append)
        resume = None
        writer: SinkWriter | None = None
        try:
            sink_root, sink_name = (None, spec.stream_id) if spec.out_dir is None else spec.sink_place
            if sink_root is not None:  # done.json and checkpoints go there, whatever the sinks; no folder a link
                stream_dir(Path(spec.out_dir), *spec.stream_dir.relative_to(spec.out_dir).parts)
            first, stop = (0, None) if spec.chunk is None else (spec.chunk.start, spec.chunk.stop)
            with self._reader or open_video(spec.source, backend=spec.decoder, threads=spec.decode_threads,
                                            folder_fps=spec.folder_fps) as reader:
                info = reader.info
                total = info.frame_count if stop is None else stop
                self.expected = report.expected_frames = None if total is None else total - first
                self.frame_size = (info.height, info.width)
                stream = StreamInfo(sink_name, spec.source, info.width, info.height, info.fps)
                sinks = build_sinks(spec.sinks, sink_root) if spec.sinks else []
                writer = SinkWriter([*sinks, *self._sink_objects], name=f"sink-{spec.work_id}", source=spec.source,
                                    on_written=self._on_written)
                settings = dict(keyframes=spec.keyframes, association=spec.association,
                                keep_images=any(sink.needs_image for sink in writer.sinks))
                if spec.resume and checkpoints is not None:
                    resume = checkpoints.load((info.height, info.width), spec.stream_id, spec.source, **settings)
                start = resume.next_index if resume else first
                self.frames_done = start - first
                for sink in writer.sinks:
                    sink.open(stream, start_frame=start)
                self.processor = resume.processor if resume else StreamProcessor(
                    spec.stream_id, spec.source, [*spec.prompts, *self._added], **settings)
                if resume and self._open_ended:  # a restarted feed: its host's prompts, whatever its snapshot had
                    self.processor.follow_prompts([*spec.prompts, *self._added])
                elif resume and self._added:
                    self.processor.add_prompts(self._added)
                if spec.start_memories and not resume:  # a later chunk: its first frame is a keyframe on them
                    self.processor.memories, self.processor.first_prompt_frame = list(spec.start_memories), first
                report.resumed_from = start if resume else None
                own_from = None if spec.chunk is None else spec.chunk.own_from

                def checkpoint(last_image: np.ndarray) -> None:
                    # A file resumed from a checkpoint sends its records from there again, so one is saved only
                    # once every sink durably holds every record before it; a feed's passed frames never come
                    # back, so its snapshot keeps its tracks fresh whatever a broker still holds.
                    if writer.checkpoint() or self._open_ended:
                        checkpoints.save(self.processor, last_image)

                frames = self._frames(reader, start)
                for record in stream_records(
                    frames if stop is None else itertools.takewhile(lambda frame: frame.index < stop, frames),
                    self.processor,
                    submit=self._submit(),
                    max_pending=spec.max_pending,
                    previous=resume.previous_image if resume else None,
                    checkpoint=checkpoint if checkpoints is not None else None,
                    checkpoint_every=spec.checkpoint_every,
                ):
                    writer.put(record)
                    self.frames_done += 1
                    if record.frame_index + 1 == own_from:  # the frames shared with the chunk before end here:
                        writer.checkpoint()  # the MP4 sink starts a part, which the joined video begins with
                    yield record
                writer.drain()
                report.concealed_frames = list(reader.corrupt_frames)
            report.status = "done"
        except GeneratorExit:  # the consumer stopped iterating: the records so far are written, the rest never run
            report.status = "interrupted"
            raise
        except Exception as exc:  # noqa: BLE001 - reported per stream; a batch carries on
            self.failure = exc
            report.error = error_record(exc, spec.source, self.frames_done, traceback=True)
        finally:
            if writer is not None:
                report.outputs = writer.close()  # records emitted before an error are written too
                if report.status == "done" and writer.close_error is not None:  # an output left unfinished
                    report.status, report.error = "failed", error_record(writer.close_error, spec.source)
            self._finish(started, resumed=resume is not None, checkpoints=checkpoints)

    def _frames(self, reader: VideoReader, start: int) -> Iterator[Any]:
        yield from reader.frames(start)
        if self._open_ended:
            self.processor.drop_unreached_prompts()

    def _finish(self, started: float, resumed: bool, checkpoints: StreamCheckpoints | None) -> None:
        spec, report = self.spec, self.report
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
        if spec.out_dir is not None and report.status == "done":
            write_done(spec.stream_dir, spec.fingerprint, report.to_dict())
        elif resumed and report.status == "failed":  # a re-run starts over rather than meet the same failure
            checkpoints.discard()
