"""One stream's processing: prompts, keyframes, propagation and identity, without Ray.

:class:`StreamProcessor` holds a stream's state (prompt memory, keyframe policy,
tracks) and turns decoded frames into :class:`FrameRecord`s in order.
:func:`run_stream` drives it and overlaps the expensive work: optical flow for
the frames after a keyframe is computed while the keyframe is being segmented
elsewhere, so a slow segmenter and the decoder run concurrently. The segmenter
call is injected (``submit``), so the same loop runs in-process or on Ray.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, ContextManager, Iterable, Iterator, Protocol, Sequence

import numpy as np

from operators.association import AssociationConfig, TrackAssigner
from operators.errors import InvalidPromptError, PipelineError, SegmenterError, VideoDecodeError, VideoOpenError
from operators.keyframes import KeyframeConfig, KeyframePolicy, reanchor_regions
from operators.propagation import FlowPropagator
from operators.records import (Box, FrameKind, FrameReason, FrameRecord, Instances, KeyframeReason, Prompt, PromptError,
                               SkipReason)
from operators.segmenters.base import PromptMemory, Segmenter, segment_many, segment_within
from operators.state import StateError, StateReader


class Frame(Protocol):
    index: int
    pts: float | None
    image: np.ndarray


@dataclass(frozen=True, eq=False)
class DroppedFrame:
    """A frame the source decoded but will not have processed (a live feed's scheduler dropped it, ``reason``
    saying why): it still gets its record, ``skipped`` with that reason, in frame order, and the stream's
    state and optical flow pass over it."""

    index: int
    pts: float | None
    image: np.ndarray
    reason: SkipReason


@dataclass
class KeyframeRequest:
    """Everything a stateless segmenter worker needs for one keyframe."""

    frame_index: int
    image: np.ndarray
    memories: list[PromptMemory]
    new_prompts: list[Prompt]
    # Refresh the memories from this keyframe's detections. Off for keyframes that only re-anchor masks
    # optical flow cannot carry (ill-posed flow): the regular interval's keyframes keep the memory fresh.
    refresh: bool = True
    # Where the tracked objects are, for a re-anchoring keyframe: the segmenter need search only there.
    regions: list[Box] | None = None


@dataclass
class KeyframeResult:
    frame_index: int
    memories: list[PromptMemory]
    detections: Instances


def run_keyframe(segmenter: Segmenter, request: KeyframeRequest) -> KeyframeResult:
    """Encode new prompts, segment with every cached memory, and refresh the memories.

    Prompts given on the same frame share one memory; prompts added later get
    their own, so adding a prompt never re-encodes the others.
    """
    return run_keyframes(segmenter, [request])[0]


def run_keyframes(segmenter: Segmenter, requests: Sequence[KeyframeRequest]) -> list[KeyframeResult]:
    """:func:`run_keyframe` for several requests (keyframes of several streams): every frame and memory
    goes to the segmenter in one :func:`segment_many` call, batched where the model can."""
    memories = []
    for request in requests:
        memories.append(list(request.memories))
        if request.new_prompts:
            memories[-1].append(segmenter.encode_prompts(request.image, request.new_prompts))
    pairs = [(request, memory) for request, own in zip(requests, memories) for memory in own]
    whole = [(request.image, memory) for request, memory in pairs if request.regions is None]
    whole_found = iter(segment_many(segmenter, [image for image, _ in whole], [memory for _, memory in whole]))
    parts = iter([next(whole_found) if request.regions is None
                  else segment_within(segmenter, request.image, memory, request.regions)
                  for request, memory in pairs])
    results = []
    for request, own in zip(requests, memories):
        found = [next(parts) for _ in own]
        refreshed = [
            segmenter.refresh(request.image, memory, part)
            if request.refresh and not (request.new_prompts and memory is own[-1]) else memory
            for memory, part in zip(own, found)
        ]
        height, width = request.image.shape[:2]
        results.append(KeyframeResult(request.frame_index, refreshed, Instances.concatenate(found, height, width)))
    return results


#: Times one named step of a stream (``with timer("flow"): ...``): a profiler's hook, see :class:`StreamProcessor`.
StepTimer = Callable[[str], ContextManager[object]]
_UNTIMED = contextlib.nullcontext()


def _untimed(_step: str) -> ContextManager[object]:
    return _UNTIMED


class Future(Protocol):
    def done(self) -> bool: ...

    def result(self) -> KeyframeResult: ...


@dataclass
class StreamStats:
    frames: int = 0
    keyframes: int = 0
    propagated: int = 0
    skipped: int = 0
    keyframe_reasons: dict[str, int] = field(default_factory=dict)

    def count(self, record: FrameRecord) -> None:
        self.frames += 1
        if record.kind == "keyframe":
            self.keyframes += 1
            self.keyframe_reasons[record.reason or "?"] = self.keyframe_reasons.get(record.reason or "?", 0) + 1
        elif record.kind == "propagated":
            self.propagated += 1
        else:
            self.skipped += 1

    def to_state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: object) -> "StreamStats":
        s = StateReader(state, "stats")
        counts = {name: s.integer(name, minimum=0) for name in ("frames", "keyframes", "propagated", "skipped")}
        return cls(**counts, keyframe_reasons=s.counts("keyframe_reasons"))


class StreamProcessor:
    """Per-stream state machine: decides each frame's kind and produces its record."""

    def __init__(
        self,
        stream_id: str,
        source: str,
        prompts: Sequence[Prompt],
        propagator: FlowPropagator | None = None,
        keyframes: KeyframeConfig | None = None,
        association: AssociationConfig | None = None,
        keep_images: bool = False,
        timer: StepTimer | None = None,
    ) -> None:
        """``timer`` times the stream's steps (``scene_cut_signature``, ``flow``, ``finish_keyframe``,
        ``association``, ``finish_propagated``, ``warp``, ``flow_support``; nested ones inside their
        callers) for a profiler such as the bench's; without one they cost a no-op context each."""
        self.stream_id = stream_id
        self.source = source
        self.propagator = propagator or FlowPropagator()
        self.policy = KeyframePolicy(keyframes or KeyframeConfig())
        self.assigner = TrackAssigner(association or AssociationConfig())
        self.keep_images = keep_images
        self.timer = timer or _untimed
        self.memories: list[PromptMemory] = []
        self.scheduled: list[Prompt] = []
        self.removed_prompt_ids: set[int] = set()
        self.controls: "queue.SimpleQueue[tuple[str, object]]" = queue.SimpleQueue()
        self.last: Instances | None = None
        self.stats = StreamStats()
        self.next_index = 0
        self.first_prompt_frame: int | None = None
        self._reason: KeyframeReason | None = None
        self._named: list[Prompt] = []  # the in-flight keyframe's new prompts that ask for a track id
        self._schedule(prompts)

    # -- saved state ------------------------------------------------------------------------
    def to_state(self) -> dict:
        """The stream's state at a frame boundary, as JSON values and arrays (:mod:`operators.state`).

        Not in it: the settings the constructor takes (the stream's spec gives them again) and pending
        control messages (a restart does not replay them). Every prompt memory must have ``to_state``
        (:class:`~operators.segmenters.base.PromptMemory`); an AttributeError says which does not.
        """
        return {
            "next_index": self.next_index,
            "first_prompt_frame": self.first_prompt_frame,
            "memories": [memory.to_state() for memory in self.memories],
            "scheduled": [prompt.to_state() for prompt in self.scheduled],
            "removed_prompt_ids": sorted(self.removed_prompt_ids),
            "last": None if self.last is None else self.last.to_state(),
            "stats": self.stats.to_state(),
            "policy": self.policy.to_state(),
            "assigner": self.assigner.to_state(),
        }

    @classmethod
    def from_state(
        cls,
        state: object,
        memory_type: type[PromptMemory],
        frame_size: tuple[int, int],
        stream_id: str,
        source: str,
        keyframes: KeyframeConfig | None = None,
        association: AssociationConfig | None = None,
        keep_images: bool = False,
    ) -> "StreamProcessor":
        """The processor :meth:`to_state` saved, for a stream of ``frame_size`` (H, W) frames whose memories
        are ``memory_type``'s; the other arguments are the constructor's. :class:`StateError` names what is
        wrong with a ``state`` that is not one."""
        s = StateReader(state, "processor")
        processor = cls(stream_id, source, (), keyframes=keyframes, association=association, keep_images=keep_images)
        processor.next_index = s.integer("next_index", minimum=1)
        processor.first_prompt_frame = s.integer("first_prompt_frame", minimum=0, optional=True)
        processor.memories = [memory_type.from_state(m) for m in s.items("memories")]
        processor.scheduled = [Prompt.from_state(p, f"processor.scheduled[{i}]")
                               for i, p in enumerate(s.items("scheduled"))]
        for prompt in processor.scheduled:
            try:
                prompt.validate(*frame_size)
            except PromptError as exc:
                raise StateError(f"processor.scheduled: {exc}") from None
        processor.removed_prompt_ids = set(s.ints("removed_prompt_ids"))
        last = s.value("last")
        processor.last = None if last is None else Instances.from_state(last, frame_size, "processor.last")
        processor.stats = StreamStats.from_state(s.value("stats"))
        processor.policy = KeyframePolicy.from_state(processor.policy.config, s.value("policy"))
        processor.assigner = TrackAssigner.from_state(processor.assigner.config, s.value("assigner"))
        return processor

    # -- prompts -----------------------------------------------------------------------------
    def _schedule(self, prompts: Sequence[Prompt]) -> None:
        taken = self.taken_prompt_ids
        for prompt in prompts:
            if prompt.prompt_id in self.removed_prompt_ids:  # only ids an encoding still holds are kept there
                raise InvalidPromptError(self.source, (
                    f"prompt id {prompt.prompt_id} was removed, but prompts given on its frame share its encoding "
                    "and still run: give the new prompt another id"))
            if prompt.prompt_id in taken:
                raise InvalidPromptError(self.source, f"prompt id {prompt.prompt_id} is already in use")
            taken.add(prompt.prompt_id)
            self.scheduled.append(prompt.with_frame(max(prompt.frame_index, self.next_index)))

    @property
    def _encoded_prompt_ids(self) -> set[int]:
        return {pid for m in self.memories for pid in m.prompt_ids}

    @property
    def taken_prompt_ids(self) -> set[int]:
        """Ids a new prompt may not use: those of prompts waiting for their frame and of every cached encoding,
        removed prompts' included while prompts that share their encoding run (it still finds their objects)."""
        return {p.prompt_id for p in self.scheduled} | self._encoded_prompt_ids

    def add_prompts(self, prompts: Sequence[Prompt]) -> None:
        """Thread-safe: the prompts take effect on their frame, or the next frame if that has passed."""
        self.controls.put(("add", list(prompts)))

    def remove_prompts(self, prompt_ids: Iterable[int]) -> None:
        """Thread-safe: stop segmenting these prompts from the next frame on."""
        self.controls.put(("remove", set(prompt_ids)))

    def follow_prompts(self, prompts: Sequence[Prompt]) -> None:
        """Before the stream runs: make ``prompts`` its prompts from its next frame on, removing the ones it
        runs that are not among them and adding those it never had. A live feed restarted from a snapshot
        takes the prompts its host holds, which may have changed after the snapshot."""
        wanted = {p.prompt_id for p in prompts}
        if gone := (self.taken_prompt_ids - self.removed_prompt_ids) - wanted:
            self.remove_prompts(gone)
        if new := [p for p in prompts if p.prompt_id not in self.taken_prompt_ids]:
            self.add_prompts(new)

    def _apply_controls(self) -> None:
        while not self.controls.empty():
            op, payload = self.controls.get()
            if op == "add":
                self._schedule(payload)  # type: ignore[arg-type]
            else:
                ids = set(payload)  # type: ignore[arg-type]
                self.removed_prompt_ids |= ids
                self.scheduled = [p for p in self.scheduled if p.prompt_id not in ids]
                self.memories = [m for m in self.memories if set(m.prompt_ids) - self.removed_prompt_ids]
                # Ids no encoding holds any more are free again; the removed prompts' tracks end here.
                self.removed_prompt_ids &= self._encoded_prompt_ids
                self.assigner.forget_prompts(ids)
                if self.last is not None:
                    self.last = _without_prompts(self.last, ids)

    def _due_prompts(self, frame: Frame) -> list[Prompt]:
        due = [p for p in self.scheduled if p.frame_index <= frame.index]
        height, width = frame.image.shape[:2]
        for prompt in due:
            try:
                prompt.validate(height, width)
            except PromptError as exc:
                raise InvalidPromptError(self.source, str(exc), frame.index) from None
        self.scheduled = [p for p in self.scheduled if p.frame_index > frame.index]
        if due and self.first_prompt_frame is None:
            self.first_prompt_frame = frame.index
        return [p.with_frame(frame.index) for p in due]

    def is_tracking(self, frame_index: int) -> bool:
        """Whether frame ``frame_index`` can have instances (so its optical flow is worth computing)."""
        started = self.first_prompt_frame is not None and self.first_prompt_frame < frame_index
        return started or any(p.frame_index < frame_index for p in self.scheduled)

    # -- frames -----------------------------------------------------------------------------
    def prepare(self, frame: Frame) -> KeyframeRequest | None:
        """Decide the frame's kind; a keyframe returns the request to send to a segmenter."""
        self._apply_controls()
        self.next_index = frame.index + 1
        with self.timer("scene_cut_signature"):
            self.policy.observe_frame(frame.image)
        new_prompts = self._due_prompts(frame)
        if not new_prompts and not self.memories:
            return None
        self._reason = self.policy.decide(bool(new_prompts))
        if self._reason is None:
            return None
        self._named = [p for p in new_prompts if p.track_id is not None]
        reanchor = self._reason == "ill_posed_flow"
        return KeyframeRequest(frame.index, frame.image, list(self.memories), new_prompts, refresh=not reanchor,
                               regions=reanchor_regions(self.last) if reanchor and self.last is not None else None)

    def _warped(self, flow: object | None, frame: Frame) -> Instances:
        height, width = frame.image.shape[:2]
        if self.last is None or len(self.last) == 0 or flow is None:
            return Instances.empty(height, width)
        with self.timer("warp"):
            return self.propagator.warp(self.last, flow)

    def finish_keyframe(self, frame: Frame, flow: object | None, result: KeyframeResult) -> FrameRecord:
        with self.timer("finish_keyframe"):
            return self._finish_keyframe(frame, flow, result)

    def _finish_keyframe(self, frame: Frame, flow: object | None, result: KeyframeResult) -> FrameRecord:
        self.memories = result.memories
        # An encoding shared with a removed prompt still finds that prompt's objects.
        detections = _without_prompts(result.detections, self.removed_prompt_ids)
        # Optical flow across a cut is meaningless: match the new shot against the last masks as they were.
        reference = self.last if self.policy.cut and self.last is not None else self._warped(flow, frame)
        # A re-anchoring keyframe corrects the tracked objects; the regular ones find new instances.
        births = self._reason != "ill_posed_flow"
        with self.timer("association"):
            instances = self.assigner.assign_keyframe(detections, reference, frame.index, births=births,
                                                      named=self._named)
        self.policy.observe_keyframe(instances)
        return self._emit(frame, "keyframe", instances, self._reason)

    def finish_other(self, frame: Frame, flow: object | None) -> FrameRecord:
        """A frame with no keyframe: propagate the tracks, or mark it skipped while there is no prompt."""
        with self.timer("finish_propagated"):
            return self._finish_other(frame, flow)

    def _finish_other(self, frame: Frame, flow: object | None) -> FrameRecord:
        if not self.memories:
            height, width = frame.image.shape[:2]
            reason: FrameReason = "no_prompt_yet" if self.first_prompt_frame is None else "prompts_removed"
            return self._emit(frame, "skipped", Instances.empty(height, width), reason)
        instances = self._warped(flow, frame)
        lost = instances.scores <= 0  # no pixel of the mask is left in the frame, or none is consistent
        if lost.any():  # those tracks are absent now (a keyframe may bring them back), not shown empty or stale
            instances = instances[~lost]
        support = None
        if flow is not None and self.policy.config.watches_flow:
            with self.timer("flow_support"):
                support = self.propagator.flow_support(instances, flow)
        self.policy.observe_instances(instances, support)
        self.assigner.observe(instances, frame.index)
        return self._emit(frame, "propagated", instances, None)

    def _emit(self, frame: Frame, kind: FrameKind, instances: Instances, reason: FrameReason | None) -> FrameRecord:
        self.last = instances
        record = FrameRecord(
            stream_id=self.stream_id,
            frame_index=frame.index,
            pts=frame.pts,
            kind=kind,
            instances=instances,
            absent_track_ids=self.assigner.absent(instances, frame.index),
            reason=reason,
            image=frame.image if self.keep_images else None,
        )
        self.stats.count(record)
        return record

    def dropped(self, frame: DroppedFrame) -> FrameRecord:
        """The record of a frame the source dropped; the stream's state does not see it (an MP4 sink still
        shows its image)."""
        height, width = frame.image.shape[:2]
        return FrameRecord(self.stream_id, frame.index, frame.pts, "skipped", Instances.empty(height, width),
                           reason=frame.reason, image=frame.image if self.keep_images else None)

    def drop_unreached_prompts(self) -> None:
        """Forget prompts scheduled on frames the stream will not reach: a live feed that stops before them
        is not an error (:meth:`finish_stream` is, for a file)."""
        self.scheduled = []

    def finish_stream(self) -> None:
        """Raise if a prompt was scheduled on a frame the stream never reached."""
        if self.scheduled:
            first = min(self.scheduled, key=lambda p: p.frame_index)
            raise InvalidPromptError(
                self.source,
                f"prompt {first.prompt_id} is on frame {first.frame_index}, "
                f"but the video ends after {self.next_index} frames",
                first.frame_index,
            )

    def memory_nbytes(self) -> int:
        """Cached prompt encodings plus every track's appearance bank: constant in stream length."""
        return sum(m.nbytes() for m in self.memories) + self.assigner.nbytes()


def _without_prompts(instances: Instances, prompt_ids: set[int]) -> Instances:
    """``instances`` less those of ``prompt_ids``; the same object (no copy of the masks, 2 MB a frame at
    720p) when there are none."""
    removed = np.isin(instances.prompt_ids, list(prompt_ids))
    return instances[~removed] if removed.any() else instances


#: Decoded frames a stream may hold waiting for a keyframe's result (the default of every mode): enough to
#: decode and measure flow for a whole keyframe interval while the keyframe is segmented.
MAX_PENDING = 16


def run_stream(
    frames: Iterable[Frame | DroppedFrame],
    processor: StreamProcessor,
    submit: Callable[[KeyframeRequest], Future],
    emit: Callable[[FrameRecord], None],
    max_pending: int = MAX_PENDING,
    previous: np.ndarray | None = None,
    checkpoint: Callable[[np.ndarray], None] | None = None,
    checkpoint_every: int = 0,
) -> None:
    """:func:`stream_records`, each record handed to ``emit``."""
    for record in stream_records(frames, processor, submit, max_pending, previous, checkpoint, checkpoint_every):
        emit(record)


def stream_records(
    frames: Iterable[Frame | DroppedFrame],
    processor: StreamProcessor,
    submit: Callable[[KeyframeRequest], Future],
    max_pending: int = MAX_PENDING,
    previous: np.ndarray | None = None,
    checkpoint: Callable[[np.ndarray], None] | None = None,
    checkpoint_every: int = 0,
) -> Iterator[FrameRecord]:
    """Process ``frames`` in order, yielding one record per frame.

    At most ``max_pending`` decoded frames wait for a keyframe result and at most
    one keyframe per stream is in flight, so memory is bounded whatever the
    video's length. ``previous`` is the image before the first frame (when
    resuming mid-video). Every ``checkpoint_every`` frames, once every earlier
    frame has been yielded, ``checkpoint(last_image)`` may save the processor (at the first frame processed
    in each period: a live feed may have dropped the period's last one). ``frames`` may hold
    :class:`DroppedFrame`s: each gets its skipped record in its place.
    A record is yielded before the next frame is prepared, so prompts the consumer adds on seeing frame
    ``k`` apply from frame ``k + 1`` (with a segmenter that answers at once, before it is even decoded).
    """
    pending: deque[tuple[Frame | DroppedFrame, object | None]] = deque()
    inflight: Future | None = None
    checkpointed: int | None = None  # checkpoint_every periods done: the first frame's are (a resume's start)

    def advance(block: bool, keep: int) -> Iterator[FrameRecord]:
        nonlocal inflight
        while len(pending) > keep:
            frame, flow = pending[0]
            if isinstance(frame, DroppedFrame):
                record = processor.dropped(frame)
            elif inflight is None:
                request = processor.prepare(frame)
                if request is not None:
                    inflight = submit(request)
                    continue
                record = processor.finish_other(frame, flow)
            else:
                if not block and not inflight.done():
                    return
                try:
                    result = inflight.result()
                except Exception as exc:  # noqa: BLE001 - any worker failure becomes a named error
                    reason = f"segmenter failed: {type(exc).__name__}: {exc}"
                    raise SegmenterError(processor.source, reason, frame.index) from exc
                inflight = None
                record = processor.finish_keyframe(frame, flow, result)
            pending.popleft()
            yield record

    decoded = iter(frames)
    while True:
        try:
            frame = next(decoded, None)
        except PipelineError:
            yield from advance(block=True, keep=0)  # decoding failed part-way: the frames before it still get records
            raise
        if frame is None:
            break
        if isinstance(frame, DroppedFrame):
            pending.append((frame, None))
            yield from advance(block=False, keep=0)
            continue
        if previous is None and (reason := processor.propagator.too_small(*frame.image.shape[:2])):
            raise VideoOpenError(processor.source, reason, frame.index)
        if previous is not None and previous.shape != frame.image.shape:
            yield from advance(block=True, keep=0)  # the frames before it still get records
            (h0, w0), (h1, w1) = previous.shape[:2], frame.image.shape[:2]
            raise VideoDecodeError(processor.source, f"the frame size changed from {w0}x{h0} to {w1}x{h1}; "
                                   "masks and optical flow need one size per stream", frame.index)
        flow = None
        if previous is not None and processor.is_tracking(frame.index):
            with processor.timer("flow"):
                flow = processor.propagator.flow(previous, frame.image)
        previous = frame.image
        if checkpointed is None:
            checkpointed = frame.index // checkpoint_every if checkpoint_every else 0
        pending.append((frame, flow))
        yield from advance(block=False, keep=0)
        if len(pending) > max_pending:
            yield from advance(block=True, keep=max_pending)
        if checkpoint is not None and checkpoint_every and (frame.index + 1) // checkpoint_every > checkpointed:
            yield from advance(block=True, keep=0)  # a consistent point: every frame so far has its record
            checkpoint(frame.image)
            checkpointed = (frame.index + 1) // checkpoint_every
    yield from advance(block=True, keep=0)
    processor.finish_stream()


@dataclass
class LocalFuture:
    """A keyframe computed in-process (no Ray); a failure is raised by ``result`` as a remote one would be."""

    value: KeyframeResult | None = None
    error: Exception | None = None

    def done(self) -> bool:
        return True

    def result(self) -> KeyframeResult:
        if self.error is not None:
            raise self.error
        return self.value


def thread_submit(
    segmenter: Segmenter, executor: concurrent.futures.Executor, overlap: Callable[[], bool] = lambda: True
) -> Callable[[KeyframeRequest], Future]:
    """Keyframes on ``executor``'s thread, as a remote segmenter's would be: :func:`run_stream` decodes the
    next frames and computes their flows meanwhile (OpenCV releases the GIL).

    That only pays where a core is free for the second thread. ``overlap()`` is asked at every keyframe;
    while it says no, keyframes run in the calling thread instead: on cores every stream already keeps
    busy, the two threads only contend (3.5 % slower for two streams on two cores). Results are the same
    either way.
    """
    run_here = local_submit(segmenter)
    return lambda request: executor.submit(run_keyframe, segmenter, request) if overlap() else run_here(request)


def local_submit(segmenter: Segmenter) -> Callable[[KeyframeRequest], Future]:
    def submit(request: KeyframeRequest) -> LocalFuture:
        try:
            return LocalFuture(run_keyframe(segmenter, request))
        except Exception as exc:  # noqa: BLE001 - run_stream names it with the stream and frame
            return LocalFuture(error=exc)

    return submit
