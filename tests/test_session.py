"""The in-process session API on real encoded videos: the generator, prompts mid-stream, sink objects,
and the same bytes as ``run`` on Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest

import pipeline
from bench.clips import ClipSpec, make_clip
from operators.errors import InvalidPromptError, VideoDecodeError
from operators.records import Prompt
from operators.segmenters import build_segmenter
from operators.stream import DroppedFrame, local_submit
from operators.sinks import JsonlSink
from pipeline.config import JobConfig
from pipeline.job import run_job
from pipeline.session import StreamSession, StreamSpec
from pipeline.sources import open_video

FRAMES = 24


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(ClipSpec(seed=5, num_frames=FRAMES, kinds=("red_blob", "blue_tile"), instances_per_kind=1),
                     tmp_path_factory.mktemp("session") / "two_kinds.mp4")


def _box(clip, object_id: int) -> str:
    x0, y0, x1, y1 = clip.suggested_prompt(clip.kinds[object_id], "box").box
    return f"box:{x0},{y0},{x1},{y1}"


def test_generator_yields_every_frame_in_order_with_the_prompt_tracked(clip):
    session = pipeline.StreamSession.open(str(clip.path), segmenter="default")
    [prompt] = session.add_prompts([_box(clip, 1)], frame=0)
    records = list(session)
    assert prompt.prompt_id == 0
    assert [r.frame_index for r in records] == list(range(FRAMES))
    np.testing.assert_allclose([r.pts for r in records], np.arange(FRAMES) / clip.fps, atol=1e-6)
    assert records[0].kind == "keyframe" and records[0].reason == "prompt"
    assert all(len(r.instances) >= 1 and 0 in r.instances.prompt_ids for r in records)
    assert session.report.status == "done" and session.report.frames == FRAMES and session.report.error is None
    assert session.report.keyframes + session.report.propagated == FRAMES


def test_a_prompt_added_mid_stream_takes_effect_on_that_frame(clip):
    session = StreamSession.open(clip.path, prompts=[_box(clip, 1)])
    added_at = 9
    records = []
    for record in session:
        records.append(record)
        if record.frame_index == added_at - 1:
            [added] = session.add_prompts([_box(clip, 2)], frame=added_at)
            assert added.prompt_id == 1 and added.frame_index == added_at
    assert [r.frame_index for r in records] == list(range(FRAMES))
    before, on = records[added_at - 1], records[added_at]
    assert 1 not in before.instances.prompt_ids
    assert on.kind == "keyframe" and on.reason == "prompt" and 1 in on.instances.prompt_ids
    new_tracks = set(on.instances.track_ids) - set(before.instances.track_ids)
    assert new_tracks and all(new_tracks <= set(r.instances.track_ids) for r in records[added_at:])


def test_bad_prompts_are_refused_at_once_and_the_stream_runs_on(clip):
    session = StreamSession.open(clip.path, prompts=[_box(clip, 1)])
    width, height = clip.size
    records = []
    for record in session:
        records.append(record)
        if record.frame_index == 3:
            with pytest.raises(InvalidPromptError, match="outside"):
                session.add_prompts([f"box:{width + 5},0,{width + 40},{height // 2}"])
            with pytest.raises(InvalidPromptError, match="mask is 8x8"):
                session.add_prompts([Prompt(7, "mask", mask=np.ones((8, 8), bool))])
            with pytest.raises(InvalidPromptError, match="already in use"):
                session.add_prompts([Prompt(0, "point", points=((5.0, 5.0),))])
    assert len(records) == FRAMES and session.report.status == "done"


def test_in_memory_frames_and_a_sink_object_give_the_file_s_records(clip, tmp_path):
    with open_video(clip.path) as video:
        images = [frame.image for frame in video.frames()]
    from_file = StreamSession.open(clip.path, prompts=[_box(clip, 1)], sinks=["jsonl"], out_dir=tmp_path / "file")
    list(from_file)
    sink = JsonlSink(tmp_path / "arrays")
    from_arrays = StreamSession.open(iter(images), prompts=[_box(clip, 1)], sinks=[sink], stream_id="two_kinds",
                                     fps=clip.fps)
    list(from_arrays)
    a = (tmp_path / "file" / "two_kinds" / "frames.jsonl").read_text()
    b = (tmp_path / "arrays" / "two_kinds" / "frames.jsonl").read_text()
    assert len(a.splitlines()) == FRAMES
    drop_pts = [{k: v for k, v in json.loads(line).items() if k != "pts"} for line in a.splitlines()]
    assert drop_pts == [{k: v for k, v in json.loads(line).items() if k != "pts"} for line in b.splitlines()]
    assert from_arrays.report.outputs[0]["frames"] == FRAMES


def test_a_broken_frame_ends_the_stream_after_its_records_with_the_error_named(clip):
    with open_video(clip.path) as video:
        images = [frame.image for frame in video.frames()][:6]
    images.insert(4, np.zeros((8, 8), np.uint8))
    session = StreamSession.open(images, prompts=[_box(clip, 1)])
    seen = []
    with pytest.raises(VideoDecodeError, match="frame 4"):
        for record in session:
            seen.append(record.frame_index)
    assert seen == [0, 1, 2, 3]
    assert session.report.status == "failed" and session.report.error["frame_index"] == 4


def test_session_writes_the_same_bytes_as_run_on_ray(ray_local, clip, tmp_path):
    prompt = _box(clip, 1)
    summary = run_job(JobConfig(sources=[str(clip.path)], out_dir=tmp_path / "run", prompts=[prompt],
                                sinks=["jsonl"], progress=False))
    assert [v.status for v in summary.videos] == ["done"]
    session = StreamSession.open(clip.path, prompts=[prompt], sinks=["jsonl"], out_dir=tmp_path / "session")
    report = session.run()
    assert report.status == "done" and report.frames == FRAMES
    a = (tmp_path / "run" / "two_kinds" / "frames.jsonl").read_bytes()
    b = (tmp_path / "session" / "two_kinds" / "frames.jsonl").read_bytes()
    assert a == b and len(a.splitlines()) == FRAMES


def test_sam2_style_predictor_keeps_each_object_s_id_from_its_frame(clip):
    predictor = pipeline.VideoPredictor("default")
    state = predictor.init_state(str(clip.path))
    x0, y0, x1, y1 = clip.suggested_prompt(clip.kinds[1], "box").box
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=4, box=[x0, y0, x1, y1])
    mask = clip.masks[5][2]
    frames = []
    for frame_idx, obj_ids, masks in predictor.propagate_in_video(state):
        frames.append(frame_idx)
        assert masks.shape[0] == len(obj_ids) and masks.dtype == bool
        assert 4 in obj_ids
        if frame_idx == 4:
            predictor.add_new_mask(state, frame_idx=5, obj_id=9, mask=mask)
        if frame_idx >= 5:
            assert 9 in obj_ids, (frame_idx, obj_ids)
    assert frames == list(range(FRAMES))
    with pytest.raises(ValueError, match="foreground"):
        predictor.add_new_points_or_box(predictor.init_state(clip.path), 0, 1, points=[[5, 5]], labels=[0])


def test_stopping_the_loop_early_writes_the_records_so_far_and_reports_interrupted(clip, tmp_path):
    session = StreamSession.open(clip.path, prompts=[_box(clip, 1)], sinks=["jsonl"], out_dir=tmp_path)
    for record in session:
        if record.frame_index == 6:
            break
    lines = (tmp_path / "two_kinds" / "frames.jsonl").read_text().splitlines()
    assert session.report.status == "interrupted" and session.report.frames == 7
    assert [json.loads(line)["frame_index"] for line in lines] == list(range(7))
    assert not (tmp_path / "two_kinds" / "done.json").exists()
    with pytest.raises(RuntimeError, match="runs once"):
        session.run()


class _DroppingReader:
    """A live host's source in small: the file's frames, every third one dropped by its scheduler."""

    def __init__(self, path):
        self.video = open_video(path)
        self.info, self.corrupt_frames = self.video.info, []

    def frames(self, start=0):
        for frame in self.video.frames(start):
            yield DroppedFrame(frame.index, frame.pts, frame.image, "dropped_latency") if frame.index % 3 == 2 else frame

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.video.close()


def test_a_live_host_s_source_with_dropped_frames_and_prompts_it_never_reaches(clip):
    written = []
    spec = StreamSpec("cam", str(clip.path), [], None, [])
    session = StreamSession(spec, lambda: local_submit(build_segmenter("default")), reader=_DroppingReader(clip.path),
                            open_ended=True, on_written=lambda record, _: written.append(record))
    session.add_prompts([_box(clip, 1), f"{_box(clip, 2)}@{FRAMES + 50}"])
    records = list(session)
    assert [r.frame_index for r in records] == list(range(FRAMES))
    dropped = [r for r in records if r.frame_index % 3 == 2]
    assert all(r.kind == "skipped" and r.reason == "dropped_latency" and len(r.instances) == 0 for r in dropped)
    kept = [r for r in records if r.frame_index % 3 != 2]
    assert all(r.kind in ("keyframe", "propagated") and 0 in r.instances.prompt_ids for r in kept)
    assert session.report.status == "done" and session.report.error is None
    assert session.report.skipped_frames == 0 and session.report.keyframes + session.report.propagated == len(kept)
    assert [r.frame_index for r in written] == list(range(FRAMES))


class _UndeliveredSink:
    """A broker sink whose broker is down: it takes records and never holds them durably."""

    needs_image = False

    def open(self, stream, start_frame=0):
        pass

    def write(self, record):
        pass

    def checkpoint(self):
        return False

    def close(self):
        return {"sink": "down"}


@pytest.mark.parametrize("open_ended", [False, True])
def test_a_file_is_checkpointed_only_behind_durable_records_a_feed_whatever_a_broker_holds(clip, tmp_path, open_ended):
    spec = StreamSpec("cam", str(clip.path), [], str(tmp_path), [], checkpoint_every=4)
    session = StreamSession(spec, lambda: local_submit(build_segmenter("default")), sinks=[_UndeliveredSink()],
                            open_ended=open_ended)
    session.add_prompts([_box(clip, 1)])
    saved = [(tmp_path / "cam" / "checkpoint.npz").exists() for record in session if record.frame_index == 12]
    assert saved == [open_ended]  # a file resumed from it would skip records only the broker sink had


def test_a_file_that_ends_before_a_prompt_s_frame_fails_naming_it(clip):
    session = StreamSession.open(clip.path, prompts=[_box(clip, 1), f"{_box(clip, 2)}@{FRAMES + 50}"])
    report = session.run()
    assert report.status == "failed" and report.frames == FRAMES
    assert report.error["error"] == "InvalidPromptError" and report.error["frame_index"] == FRAMES + 50
    assert f"ends after {FRAMES} frames" in report.error["reason"]


def test_a_session_hosts_a_live_feed_served_by_ffmpeg_until_its_consumer_stops_it(clip, tmp_path):
    from bench.feeds import StreamServer

    from pipeline.sources import LiveReader, SourceEvent

    server = StreamServer(clip.path, "udp").start()
    events = []
    try:
        reader = LiveReader(server.url, timeout=10, on_status=events.append)
        spec = StreamSpec("cam", server.url, [], str(tmp_path), ["jsonl"])
        session = StreamSession(spec, lambda: local_submit(build_segmenter("default")), reader=reader, open_ended=True)
        session.add_prompts([_box(clip, 1), f"{_box(clip, 2)}@100000"])
        records = []
        for record in session:
            records.append(record)
            if len(records) == 30:
                reader.stop()
    finally:
        server.kill()
    assert session.report.status == "done", session.report.error
    assert [r.frame_index for r in records] == list(range(len(records))) and len(records) >= 30
    assert all(b.pts > a.pts for a, b in zip(records, records[1:]))
    assert records[0].kind == "keyframe" and records[0].reason == "prompt"
    assert [e["event"] for e in events] == [SourceEvent.CONNECTED, SourceEvent.STOPPED]
    lines = (tmp_path / "cam" / "frames.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame_index"] for line in lines] == [r.frame_index for r in records]


def test_a_frame_folder_is_a_session_s_video_timed_by_fps(clip, tmp_path):
    from PIL import Image

    with open_video(clip.path) as video:
        for frame in video.frames():
            Image.fromarray(frame.image).save(tmp_path / f"{frame.index:05d}.png")
    predictor = pipeline.VideoPredictor()
    state = predictor.init_state(str(tmp_path), fps=10.0)
    x0, y0, x1, y1 = clip.suggested_prompt(clip.kinds[1], "box").box
    predictor.add_new_points_or_box(state, 0, 3, points=[((x0 + x1) / 2, (y0 + y1) / 2)], labels=[1])
    records = list(state)
    assert [r.frame_index for r in records] == list(range(FRAMES))
    np.testing.assert_allclose([r.pts for r in records], np.arange(FRAMES) / 10.0)
    assert records[0].kind == "keyframe" and 3 in records[0].instances.track_ids


def test_bad_settings_are_refused_when_the_session_opens(clip, tmp_path):
    misspelt = StreamSession.open(clip.path, sinks=["jsnol"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown sink 'jsnol'"):
        list(misspelt)
    assert misspelt.report.status == "failed" and misspelt.report.error["error"] == "ValueError"
    with pytest.raises(ValueError, match="give out_dir"):
        StreamSession.open(clip.path, sinks=["jsonl"])
    with pytest.raises(TypeError, match="list is not a sink"):
        StreamSession.open(clip.path, sinks=[[]])
    with pytest.raises(ValueError, match="segmenter 'default'"):
        StreamSession.open(clip.path, segmenter_options={"no_such_option": 1})
    session = StreamSession.open(clip.path)
    with pytest.raises(InvalidPromptError, match="frame index -2 is negative"):
        session.add_prompts([_box(clip, 1)], frame=-2)
    with pytest.raises(InvalidPromptError, match="a box is x0,y0,x1,y1"):
        session.add_prompts(["box:1,2,3"])
