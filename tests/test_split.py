"""One video over several stream workers: chunk plans, id stitching, and split jobs on real Ray and videos."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bench.clips import ClipSpec, make_clip
from operators.chunking import Chunk, TrackStitcher, match_tracks, plan_chunks
from operators.metrics import evaluate_clip
from operators.records import FrameRecord, Instances
from operators.sinks import JsonlSink, PalettePngSink, StreamInfo, VideoSink
from pipeline.cli import _config, build_parser
from pipeline.config import JobConfig
from pipeline.job import run_job
from pipeline.session import CHUNKS_FOLDER
from pipeline.sources import open_video
from pipeline.split import join_chunks

FRAMES = 320  # two chunks of 150 frames or more (pipeline.split.MIN_CHUNK_FRAMES)


def _owned(chunks: list[Chunk], frames: int) -> list[range]:
    return [range(c.own_from, frames if c.stop is None else c.stop) for c in chunks]


@pytest.mark.parametrize("frames, count, overlap, first_free", [(1800, 2, 10, 1), (1001, 3, 7, 1), (900, 4, 10, 300)])
def test_chunks_own_every_frame_once_and_share_the_overlap_with_the_one_before(frames, count, overlap, first_free):
    chunks = plan_chunks(frames, count, overlap, first_free)
    assert len(chunks) == count
    assert [i for owned in _owned(chunks, frames) for i in owned] == list(range(frames))
    assert chunks[0].start == 0
    for before, chunk in zip(chunks, chunks[1:]):
        assert chunk.start == chunk.own_from - overlap == before.stop - overlap  # the shared frames
        assert chunk.start >= first_free  # every prompt's frame is in the first chunk
    if first_free <= 1:  # balanced: each processes its share plus the overlap, to a frame
        work = [(frames if c.stop is None else c.stop) - c.start for c in chunks]
        assert max(work) - min(work) <= 1, work


def test_a_video_too_short_for_its_chunks_gets_fewer():
    assert len(plan_chunks(25, 4, 10)) == 1
    assert [c.index for c in plan_chunks(35, 4, 10)] == [0, 1]  # a third would own fewer frames than it shares


def _square(x: int, y: int, size: int = 10, shape: tuple[int, int] = (60, 80)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y:y + size, x:x + size] = True
    return mask


def _instances(masks: list[np.ndarray], track_ids: list[int], prompt_ids: list[int] | None = None) -> Instances:
    found = Instances.from_masks(masks, [0.9] * len(masks), prompt_ids or [0] * len(masks), 60, 80)
    return found.with_track_ids(track_ids)


def test_tracks_match_by_iou_over_the_shared_frames_and_unmatched_ones_take_new_ids():
    earlier = [_instances([_square(5 + t, 5), _square(50, 30 + t)], [1, 2]) for t in range(3)]
    # The later chunk numbered them the other way round, found a third object, and one of another prompt
    # lies on track 1.
    later = [_instances([_square(50, 31 + t), _square(5 + t, 5), _square(30, 40), _square(5 + t, 5)],
                        [1, 2, 3, 4], [0, 0, 0, 1]) for t in range(3)]
    matches = match_tracks(earlier, later)
    assert matches == {1: 2, 2: 1}
    stitcher = TrackStitcher()
    first = {"objects": [{"track_id": 1}, {"track_id": 2}], "absent_track_ids": [7]}
    assert not stitcher.remap(first) and stitcher.next_id == 8  # the first chunk's ids are the video's
    stitcher.start_chunk(matches)
    record = {"objects": [{"track_id": 1}, {"track_id": 2}, {"track_id": 3}], "absent_track_ids": [4]}
    assert stitcher.remap(record)
    assert [o["track_id"] for o in record["objects"]] == [2, 1, 8] and record["absent_track_ids"] == [9]
    table = stitcher.slot_table()
    assert list(table[[1, 2, 3, 4]]) == [2, 1, 8, 9] and table[0] == 0


def _records(clip, frames: range, track_ids: dict[int, int]) -> list[FrameRecord]:
    """The clip's ground truth as records, object o as track ``track_ids[o]``."""
    height, width = clip.spec.height, clip.spec.width
    records = []
    for t in frames:
        objects = sorted(clip.masks[t])
        found = Instances.from_masks([clip.masks[t][o] for o in objects], [0.9] * len(objects), [0] * len(objects),
                                     height, width).with_track_ids([track_ids[o] for o in objects])
        records.append(FrameRecord("clip", t, t / clip.fps, "propagated", found))
    return records


def test_joined_chunks_whose_ids_differ_are_relabelled_in_every_output(tmp_path):
    """The later chunk numbered the two objects the other way round: the joined video keeps the first
    chunk's ids everywhere (records, PNG slots, and the MP4 drawn again for that chunk)."""
    clip = make_clip(ClipSpec(seed=5, num_frames=40, width=160, height=120), tmp_path / "clip.mp4")
    chunks = [Chunk(0, 0, 24, 0), Chunk(1, 16, None, 24)]
    objects = sorted(clip.masks[0])
    images = [frame.image for frame in open_video(clip.path).frames()]
    root = tmp_path / "out" / "clip" / CHUNKS_FOLDER
    for chunk, ids in zip(chunks, [dict(zip(objects, (1, 2))), dict(zip(objects, (2, 1)))]):
        sinks = [JsonlSink(root), PalettePngSink(root), VideoSink(root)]
        for sink in sinks:
            sink.open(StreamInfo(chunk.label, str(clip.path), 160, 120, clip.fps), chunk.start)
        for record in _records(clip, range(chunk.start, chunk.stop or 40), ids):
            record.image = images[record.frame_index]
            for sink in sinks:
                sink.write(record)
            if record.frame_index + 1 == chunk.own_from:
                sinks[2].checkpoint()  # as the stream worker does where a chunk's own frames begin
        for sink in sinks:
            sink.close()
    video = JobConfig(sources=[str(clip.path)], out_dir=tmp_path / "out", prompts=["box:0,0,1,1"],
                      sinks=["jsonl", "png", "mp4"])
    from pipeline.job import plan_streams

    spec = plan_streams(video)[0][0]
    outputs, stats = join_chunks(spec, chunks)
    assert stats.frames == 40 and [o["frames"] for o in outputs] == [40, 40, 40]
    lines = (tmp_path / "out" / "clip" / "frames.jsonl").read_text().splitlines()
    records = [FrameRecord.from_dict(json.loads(line)) for line in lines]
    assert [r.frame_index for r in records] == list(range(40))
    for record in records:  # object o keeps track id (1, 2) on every frame
        expected = _records(clip, range(record.frame_index, record.frame_index + 1), dict(zip(objects, (1, 2))))[0]
        assert list(record.instances.track_ids) == list(expected.instances.track_ids)
        png = np.asarray(Image.open(tmp_path / "out" / "clip" / "masks" / f"{record.frame_index:06d}.png"))
        for mask, track_id in zip(expected.instances.masks, expected.instances.track_ids):
            assert (png[mask] == track_id).all()
    with av.open(str(tmp_path / "out" / "clip" / "annotated.mp4")) as mp4:
        assert sum(1 for _ in mp4.decode(video=0)) == 40


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    clip = make_clip(ClipSpec(seed=11, num_frames=FRAMES, width=320, height=240, speed=1.0), folder / "long.mp4")
    prompt = clip.suggested_prompt(clip.kinds[1], "box")
    prompts = folder / "prompts.json"
    prompts.write_text(json.dumps({"long.mp4": [{"type": "box", "box": list(prompt.box)}]}))
    return clip, prompts


def _run(long_clip, out: Path, **overrides):
    clip, prompts = long_clip
    options = dict(sources=[str(clip.path)], out_dir=out, prompts_file=prompts, sinks=["jsonl"], progress=False,
                   parallel=2)
    summary = run_job(JobConfig(**{**options, **overrides}))
    assert [v.status for v in summary.videos] == ["done"], summary.to_dict()["failures"]
    return summary.videos[0]


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "long" / "frames.jsonl").read_text().splitlines()]


def test_a_video_alone_is_split_and_joins_into_the_unsplit_runs_layout_and_ids(ray_local, long_clip, tmp_path):
    clip, _ = long_clip
    sinks = ["jsonl", "png", "mp4"]
    split = _run(long_clip, tmp_path / "split", sinks=sinks)  # one video, two slots: split by itself
    whole = _run(long_clip, tmp_path / "whole", sinks=sinks, split=False)
    assert whole.chunks == []  # --no-split: one stream worker ran it
    assert [(c["start"], c["own_from"], c["stop"]) for c in split.chunks] == [(0, 0, 165), (155, 165, None)]
    assert split.frames == whole.frames == FRAMES
    assert sorted(p.name for p in (tmp_path / "split" / "long").iterdir()) == sorted(
        p.name for p in (tmp_path / "whole" / "long").iterdir())  # no chunks folder left
    a, b = _lines(tmp_path / "split"), _lines(tmp_path / "whole")
    assert [r["frame_index"] for r in a] == list(range(FRAMES))
    assert a[:165] == b[:165]  # the first chunk is the unsplit run's start, byte for byte
    frames = [[FrameRecord.from_dict(r).instances for r in lines] for lines in (a, b)]
    for t, (mine, theirs) in enumerate(zip(*frames)):  # each stitched id is the unsplit run's for that object
        assert sorted(mine.track_ids) == sorted(theirs.track_ids), t
        for track_id, mask in zip(mine.track_ids, mine.masks):
            other = theirs.masks[list(theirs.track_ids).index(track_id)]
            assert np.count_nonzero(mask & other) > 0.5 * np.count_nonzero(mask | other), (t, track_id)
    scores = [evaluate_clip(pred, clip.masks, matching="track").jf_mean for pred in frames]
    assert abs(scores[0] - scores[1]) <= 0.01, scores
    assert split.keyframes == sum(r["kind"] == "keyframe" for r in a)
    assert len(list((tmp_path / "split" / "long" / "masks").iterdir())) == FRAMES
    with av.open(str(tmp_path / "split" / "long" / "annotated.mp4")) as mp4:
        assert sum(1 for _ in mp4.decode(video=0)) == FRAMES


def test_split_and_no_split_on_the_command_line():
    parse = build_parser().parse_args
    base = ["run", "x.mp4", "--out", "o", "--prompt", "box:0,0,1,1"]
    assert _config(parse(base + ["--split"]), sources=["x.mp4"], prompts=["box:0,0,1,1"]).split is True
    assert _config(parse(base + ["--no-split"]), sources=["x.mp4"], prompts=["box:0,0,1,1"]).split is False
    assert _config(parse(base), sources=["x.mp4"], prompts=["box:0,0,1,1"]).split is None
    with pytest.raises(ValueError, match="split video is written only to file sinks"):
        JobConfig(sources=["x.mp4"], out_dir="o", prompts=["box:0,0,1,1"], sinks=["jsonl", "redis"], split=True)


def test_a_chunk_whose_worker_died_resumes_alone_from_its_checkpoint(ray_local, long_clip, tmp_path):
    marker = tmp_path / "crashed"
    crashed = _run(long_clip, tmp_path / "crash", segmenter="tests.crashing_segmenter:CrashOnceSegmenter",
                   segmenter_placement="inline", segmenter_options={"marker": str(marker), "crash_on": 12},
                   checkpoint_every=50)
    assert marker.exists(), "a stream worker's process really died"
    died = [c for c in crashed.chunks if c["attempts"] == 2]
    assert len(died) == 1 and died[0]["resumed_from"] is not None and died[0]["resumed_from"] > died[0]["start"]
    assert [c["attempts"] for c in crashed.chunks if c is not died[0]] == [1]  # the other chunk ran once
    _run(long_clip, tmp_path / "clean", checkpoint_every=50)
    assert (tmp_path / "crash" / "long" / "frames.jsonl").read_bytes() == (
        tmp_path / "clean" / "long" / "frames.jsonl").read_bytes()
