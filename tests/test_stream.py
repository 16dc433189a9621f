"""One stream in-process (no Ray): frame kinds, prompts added or removed mid-stream, bounded buffering."""

from __future__ import annotations

import numpy as np
import pytest

from bench.clips import ClipSpec, make_clip
from operators.errors import InvalidPromptError, SegmenterError, VideoDecodeError
from operators.keyframes import KeyframeConfig
from operators.records import Instances, Prompt
from operators.segmenters import build_segmenter
from operators.segmenters.default import DefaultSegmenter
from operators.stream import KeyframeRequest, StreamProcessor, local_submit, run_keyframe, run_stream
from pipeline.sources import DecodedFrame, open_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(ClipSpec(seed=11, num_frames=30, kinds=("red_blob", "blue_tile"), instances_per_kind=1),
                     tmp_path_factory.mktemp("stream") / "two_kinds.mp4")


def _run(clip, prompts, every=10, max_pending=16, control=None, submit=None, ahead=None):
    records = []
    decoded = [0]

    def counted(frames):
        for frame in frames:
            decoded[0] += 1
            yield frame
    segmenter = build_segmenter("default")
    processor = StreamProcessor("s", str(clip.path), prompts, keyframes=KeyframeConfig(every=every))

    def emit(record):
        records.append(record)
        if ahead is not None:
            ahead.append(decoded[0] - len(records))
        if control:
            control(processor, record)

    with open_video(clip.path) as video:
        run_stream(counted(video.frames()), processor, submit or local_submit(segmenter), emit, max_pending=max_pending)
    return records, processor


def test_frames_before_the_prompt_are_skipped_and_named(clip):
    prompt = clip.suggested_prompt("red_blob", "box").with_frame(5)
    records, processor = _run(clip, [prompt])
    assert [r.kind for r in records[:5]] == ["skipped"] * 5 and {r.reason for r in records[:5]} == {"no_prompt_yet"}
    assert records[5].kind == "keyframe" and records[5].reason == "prompt" and len(records[5].instances)
    assert processor.stats.skipped == 5 and processor.stats.frames == 30
    assert records[6].kind == "propagated" and {r.kind for r in records[6:]} <= {"propagated", "keyframe"}


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    spec = ClipSpec(seed=12, num_frames=210, kinds=("red_blob", "blue_tile"), instances_per_kind=1, speed=1.0)
    return make_clip(spec, tmp_path_factory.mktemp("stream") / "long.mp4")


def test_prompt_added_at_frame_200_of_a_running_stream_takes_effect_on_the_next_frame(long_clip):
    red = long_clip.suggested_prompt("red_blob", "box", prompt_id=0)
    blue = long_clip.suggested_prompt("blue_tile", "box", prompt_id=1)

    def add_blue(processor, record):
        if record.frame_index == 200:
            processor.add_prompts([blue])  # drawn on frame 0, but frame 200 has passed: applies on 201

    records, processor = _run(long_clip, [red], control=add_blue)
    assert all(set(r.instances.prompt_ids.tolist()) <= {0} for r in records[:201])
    assert records[201].kind == "keyframe" and records[201].reason == "prompt"
    assert set(records[201].instances.prompt_ids.tolist()) == {0, 1}
    assert len(processor.memories) == 2  # the red prompt was not re-encoded
    red_ids = {t for r in records[190:] for t, p in zip(r.instances.track_ids, r.instances.prompt_ids) if p == 0}
    assert len(red_ids) == 1, "adding a prompt does not disturb the existing tracks"


def test_removed_prompt_disappears_from_the_next_frame(clip):
    red = clip.suggested_prompt("red_blob", "box", prompt_id=0)
    blue = clip.suggested_prompt("blue_tile", "box", prompt_id=1)

    def remove_red(processor, record):
        if record.frame_index == 7:
            processor.remove_prompts([0])

    records, _ = _run(clip, [red, blue], control=remove_red)
    assert 0 in records[7].instances.prompt_ids
    assert all(0 not in r.instances.prompt_ids for r in records[8:])
    assert all(1 in r.instances.prompt_ids for r in records[8:])


def test_duplicate_prompt_id_and_prompt_past_the_end_are_named(clip):
    red = clip.suggested_prompt("red_blob", "box", prompt_id=0)
    with pytest.raises(InvalidPromptError, match="already in use"):
        StreamProcessor("s", "x.mp4", [red, red])
    with pytest.raises(InvalidPromptError, match="frame 99, but the video ends after 30 frames"):
        _run(clip, [red, Prompt(1, "point", 99, points=((5.0, 5.0),))])


class _SlowFuture:
    """A keyframe result that is not ready for the first few polls, as a busy remote worker."""

    def __init__(self, value, polls):
        self.value, self.polls = value, polls

    def done(self):
        self.polls -= 1
        return self.polls < 0

    def result(self):
        return self.value


def test_pending_frames_stay_bounded_and_results_match_a_fast_segmenter(clip):
    segmenter = build_segmenter("default")
    prompt = clip.suggested_prompt("red_blob", "box")
    fast, _ = _run(clip, [prompt])
    ahead: list[int] = []

    def slow_submit(request: KeyframeRequest):
        return _SlowFuture(run_keyframe(segmenter, request), polls=100)

    slow, _ = _run(clip, [prompt], max_pending=4, submit=slow_submit, ahead=ahead)
    assert [r.to_dict() for r in slow] == [r.to_dict() for r in fast]
    assert max(ahead) == 4, "the decoder runs ahead of a slow segmenter, but never more than max_pending frames"


def test_segmenter_failure_names_the_frame(clip):
    class Exploding(DefaultSegmenter):
        def segment(self, frame, memory):
            raise RuntimeError("model exploded")

    with pytest.raises(SegmenterError, match="frame 0: segmenter failed: RuntimeError: model exploded"):
        _run(clip, [clip.suggested_prompt("red_blob", "box")], submit=local_submit(Exploding()))


def test_a_failed_keyframe_is_asked_for_once_and_stops_the_stream(clip):
    """Only a decoding error lets the frames before it finish; a segmenter's error stops the stream at once."""
    asked = []

    class Failing:
        def done(self):
            return True

        def result(self):
            asked.append(1)
            raise RuntimeError("worker lost")

    with pytest.raises(SegmenterError, match="frame 0: segmenter failed: RuntimeError: worker lost"):
        _run(clip, [clip.suggested_prompt("red_blob", "box")], submit=lambda request: Failing())
    assert asked == [1]


class _CountingSegmenter(DefaultSegmenter):
    refreshes = 0

    def refresh(self, frame, memory, instances):
        type(self).refreshes += 1
        return super().refresh(frame, memory, instances)


def test_a_striped_object_gets_extra_keyframes_that_do_not_refresh_its_memory(clip):
    """The blue tile is striped: flow cannot carry it, so keyframes come every 3 frames; only the regular
    interval's keyframes refresh the prompt memory."""
    tile = clip.suggested_prompt("blue_tile", "box")
    segmenter = _CountingSegmenter()
    submitted = []

    def submit(request):
        submitted.append(request)
        return local_submit(segmenter)(request)

    records, _ = _run(clip, [tile], every=10, submit=submit)
    reasons = [r.reason for r in records if r.kind == "keyframe"]
    assert reasons.count("ill_posed_flow") >= 5, reasons
    assert [r.frame_index for r in records if r.reason in ("prompt", "interval")] == [0, 10, 20]  # not delayed
    assert [r.refresh for r in submitted] == [reason != "ill_posed_flow" for reason in reasons]
    new_prompt_keyframes = sum(1 for r in submitted if r.new_prompts)
    assert _CountingSegmenter.refreshes == sum(r.refresh for r in submitted) - new_prompt_keyframes
    # Re-anchoring keyframes search around the previous frame's object only, and the object keeps its id.
    by_index = {r.frame_index: r for r in records}
    for request, reason in zip(submitted, reasons):
        assert (request.regions is not None) == (reason == "ill_posed_flow")
        if request.regions:
            (x0, y0, x1, y1), = request.regions
            bx0, by0, bx1, by1 = by_index[request.frame_index - 1].instances.boxes_xyxy[0]
            assert x0 < bx0 and y0 < by0 and x1 > bx1 and y1 > by1
            assert (x1 - x0) * (y1 - y0) < 0.5 * clip.spec.width * clip.spec.height
    assert {tuple(r.instances.track_ids) for r in records[1:]} == {(1,)}


# --------------------------------------------------------------------------- prompts removed and re-added


H, W = 120, 160


class _Memory:
    def __init__(self, prompt_ids):
        self.prompt_ids = tuple(prompt_ids)

    def nbytes(self):
        return 8


class _BoxSegmenter:
    """Finds each prompt's box wherever the prompt's memory asks: a segmenter whose answers are known."""

    def __init__(self, boxes):
        self.boxes = boxes  # prompt id -> (x0, y0, x1, y1)

    def encode_prompts(self, image, prompts):
        return _Memory(p.prompt_id for p in prompts)

    def segment(self, image, memory):
        masks = []
        for pid in memory.prompt_ids:
            x0, y0, x1, y1 = self.boxes[pid]
            mask = np.zeros(image.shape[:2], bool)
            mask[y0:y1, x0:x1] = True
            masks.append(mask)
        return Instances.from_masks(masks, [0.9] * len(masks), list(memory.prompt_ids), *image.shape[:2])

    def refresh(self, image, memory, instances):
        return memory


def _frames(count, image=None):
    still = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    return [DecodedFrame(i, i / 25, still if image is None else image(i)) for i in range(count)]


def _scripted(frames, prompts, boxes, controls=None, every=10):
    """Records of ``frames``; ``controls[i](processor)`` runs once frame ``i`` is emitted."""
    processor = StreamProcessor("s", "scripted", prompts, keyframes=KeyframeConfig(every=every, ill_posed_every=0))
    records = []

    def emit(record):
        records.append(record)
        if controls and record.frame_index in controls:
            controls[record.frame_index](processor)

    run_stream(iter(frames), processor, local_submit(_BoxSegmenter(boxes)), emit, max_pending=0)
    return records, processor


BOXES = {1: (10, 10, 30, 30), 2: (100, 60, 130, 90)}


def _prompts_seen(record):
    return sorted(set(record.instances.prompt_ids.tolist()))


def test_a_removed_prompt_stays_gone_on_the_next_keyframe_and_leaves_no_absent_track():
    prompts = [Prompt(1, "box", box=BOXES[1]), Prompt(2, "box", box=BOXES[2])]  # one shared encoding
    records, processor = _scripted(_frames(14), prompts, BOXES, {9: lambda p: p.remove_prompts([2])})
    assert records[10].kind == "keyframe" and records[10].reason == "interval"
    assert [_prompts_seen(r) for r in records[:10]] == [[1, 2]] * 10
    assert [_prompts_seen(r) for r in records[10:]] == [[1]] * 4  # the keyframe right after does not bring it back
    assert all(r.absent_track_ids == () for r in records[10:])  # its track ended, it is not waiting to return
    with pytest.raises(InvalidPromptError, match="prompt id 2 was removed, but prompts given on its frame share"):
        processor._schedule([Prompt(2, "box", box=BOXES[2])])  # its encoding still runs for prompt 1


def test_a_prompt_removed_and_added_again_takes_its_new_definition_from_its_frame():
    prompts = [Prompt(1, "box", box=BOXES[1]), Prompt(2, "box", box=BOXES[2], frame_index=2)]
    redrawn = Prompt(2, "box", box=(60, 60, 90, 90), frame_index=8)
    boxes = {**BOXES}

    def replace(processor):
        processor.remove_prompts([2])
        processor.add_prompts([redrawn])
        boxes[2] = redrawn.box  # what the new encoding finds

    records, _ = _scripted(_frames(12), prompts, boxes, {4: replace})
    assert [_prompts_seen(r) for r in records[3:5]] == [[1, 2]] * 2
    assert [_prompts_seen(r) for r in records[5:8]] == [[1]] * 3  # gone until the new prompt's frame
    assert records[8].reason == "prompt" and _prompts_seen(records[8]) == [1, 2]
    new = records[8].instances[records[8].instances.prompt_ids == 2]
    assert new.boxes_xyxy.tolist() == [[60, 60, 90, 90]] and new.track_ids.tolist() != [2]  # a new track


def test_frames_after_every_prompt_is_removed_are_skipped_and_say_so():
    records, _ = _scripted(_frames(6), [Prompt(1, "box", box=BOXES[1])], BOXES, {2: lambda p: p.remove_prompts([1])})
    assert [(r.kind, r.reason) for r in records[3:]] == [("skipped", "prompts_removed")] * 3


def test_a_change_of_frame_size_is_named_after_the_frames_before_it():
    frames = _frames(6)
    frames[4] = DecodedFrame(4, 4 / 25, np.zeros((H * 2, W * 2, 3), np.uint8))
    records = []
    processor = StreamProcessor("s", "cam.mp4", [Prompt(1, "box", box=BOXES[1])])
    with pytest.raises(VideoDecodeError, match="cam.mp4, frame 4: the frame size changed from 160x120 to 320x240"):
        run_stream(iter(frames), processor, local_submit(_BoxSegmenter(BOXES)), records.append)
    assert [r.frame_index for r in records] == [0, 1, 2, 3]
