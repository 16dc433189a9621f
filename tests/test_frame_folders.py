"""Frame folders (DAVIS/YouTube-VOS/SA-V layouts) as videos: discovery, reading, and run with resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.clips import ClipSpec, make_clip
from operators.errors import VideoDecodeError, VideoOpenError
from pipeline.config import JobConfig
from pipeline.job import assign_stream_ids, run_job
from pipeline.sources import expand_sources, open_video, source_bytes
from tests.davis_layout import write_sequence

FRAMES = 12


def _frames(folder: Path, names: list[str], size=(24, 16)) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, name in enumerate(names):
        image = np.full((size[1], size[0], 3), 10 * i, np.uint8)
        Image.fromarray(image).save(folder / name)
        images.append(image)
    return images


def test_frames_in_natural_order_with_pts_from_fps(tmp_path):
    names = ["frame10.png", "frame2.png", "frame1.png", "Frame3.PNG"]
    images = _frames(tmp_path / "seq", names)
    (tmp_path / "seq" / "notes.txt").write_text("not a frame")
    (tmp_path / "seq" / ".hidden.png").write_bytes(b"")
    with open_video(tmp_path / "seq", folder_fps=25) as video:
        assert (video.info.width, video.info.height, video.info.frame_count, video.info.fps) == (24, 16, 4, 25)
        frames = list(video.frames())
        assert [f.index for f in frames] == [0, 1, 2, 3] and [f.pts for f in frames] == [0, 0.04, 0.08, 0.12]
        # frame1, frame2, Frame3, frame10: the files' order, the numbers read as numbers.
        for frame, source in zip(frames, (images[2], images[1], images[3], images[0])):
            assert (frame.image == source).all() and frame.image.dtype == np.uint8
        resumed = list(video.frames(2))  # a resumed stream starts at file 2 directly
        assert [f.index for f in resumed] == [2, 3] and (resumed[0].image == images[3]).all()


def test_grey_and_rgba_frames_are_read_as_rgb(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(folder / "0.png")
    Image.fromarray(np.full((8, 8, 4), 9, np.uint8)).save(folder / "1.png")
    with open_video(folder) as video:
        first, second = video.frames()
    assert first.image.shape == second.image.shape == (8, 8, 3) and first.image[0, 0, 0] == 7


def test_an_unreadable_or_resized_frame_is_named_by_file_after_the_frames_before_it(tmp_path):
    _frames(tmp_path / "cut", ["00000.jpg", "00001.jpg", "00002.jpg"])
    (tmp_path / "cut" / "00002.jpg").write_bytes((tmp_path / "cut" / "00002.jpg").read_bytes()[:100])
    with open_video(tmp_path / "cut") as video:
        delivered = []
        with pytest.raises(VideoDecodeError, match="frame file 00002.jpg is not a readable image") as caught:
            delivered.extend(f.index for f in video.frames())
    assert delivered == [0, 1] and caught.value.frame_index == 2
    _frames(tmp_path / "resized", ["0.png"])
    _frames(tmp_path / "resized", ["1.png"], size=(20, 16))
    with open_video(tmp_path / "resized") as video, pytest.raises(VideoDecodeError, match="1.png is 20x16, the first"):
        list(video.frames())


def test_discovery_folders_of_frames_are_videos_and_folders_of_them_archives(tmp_path):
    davis = tmp_path / "JPEGImages" / "480p"
    _frames(davis / "bear", ["00000.jpg", "00001.jpg"])
    _frames(davis / "blackswan", ["00000.jpg"])
    (davis / "clip.mp4").write_bytes(b"x")  # a video file beside the frame folders: both kinds in one job
    assert expand_sources([str(davis / "bear")]) == [davis / "bear"]
    assert expand_sources([str(davis)]) == [davis / "bear", davis / "blackswan", davis / "clip.mp4"]
    assert expand_sources([str(tmp_path / "JPEGImages")], recursive=True) == expand_sources([str(davis)])
    assert expand_sources([str(davis / "b*")]) == [davis / "bear", davis / "blackswan"]
    # Images beside a video: the folder is not a frame folder, its video is what it holds.
    _frames(tmp_path / "mixed", ["poster.jpg"])
    (tmp_path / "mixed" / "talk.mp4").write_bytes(b"x")
    assert expand_sources([str(tmp_path / "mixed")]) == [tmp_path / "mixed" / "talk.mp4"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoOpenError, match=r"no video files \(.*\) or frame folders \(folders of jpg, jpeg, png"):
        expand_sources([str(tmp_path / "empty")])
    _frames(tmp_path / "sa-v" / "sav_000001.v2", ["0.jpg"])
    assert assign_stream_ids([davis / "bear", tmp_path / "sa-v" / "sav_000001.v2"]) == ["bear", "sav_000001.v2"]
    assert source_bytes(davis / "bear") == sum(f.stat().st_size for f in (davis / "bear").iterdir())


SPEC = ClipSpec(seed=3, num_frames=FRAMES, kinds=("red_blob", "blue_tile"), instances_per_kind=1)


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    write_sequence(root, "shapes", SPEC)
    return root


def _job(source: Path, out: Path, **overrides) -> JobConfig:
    annotation = source.parent.parent.parent / "Annotations" / "480p" / source.name / "00000.png"
    return JobConfig(**{**dict(sources=[str(source)], out_dir=out, prompts=[f"objects:{annotation}"], sinks=["jsonl"],
                               progress=False, keyframe_every=3, checkpoint_every=4), **overrides})


@pytest.mark.slow
def test_run_on_a_frame_folder_resumes_after_its_worker_died_with_the_same_records(ray_local, davis_root, tmp_path):
    folder = davis_root / "JPEGImages" / "480p" / "shapes"
    marker = tmp_path / "crashed"
    crashing = run_job(_job(folder, tmp_path / "crash", segmenter="tests.crashing_segmenter:CrashOnceSegmenter",
                            segmenter_placement="inline", segmenter_options={"marker": str(marker), "crash_on": 3},
                            fps=24))
    assert marker.exists(), "the stream worker really died"
    video = crashing.videos[0]
    assert (video.status, video.attempts, video.frames, video.resumed_from) == ("done", 2, FRAMES, 4), video
    video_file = make_clip(SPEC, tmp_path / "shapes-video.mp4").path  # a video file in the same job
    clean = run_job(_job(folder, tmp_path / "clean", fps=24, sources=[str(folder), str(video_file)]))
    assert [(v.stream_id, v.status, v.frames) for v in clean.videos] == [
        ("shapes", "done", FRAMES), ("shapes-video", "done", FRAMES)]
    resumed_lines = (tmp_path / "crash" / "shapes" / "frames.jsonl").read_text()
    assert resumed_lines == (tmp_path / "clean" / "shapes" / "frames.jsonl").read_text()
    records = [json.loads(line) for line in resumed_lines.splitlines()]
    assert [r["frame_index"] for r in records] == list(range(FRAMES)) and records[3]["pts"] == 0.125
    assert {o["track_id"] for o in records[0]["objects"]} >= {1, 2}  # the annotation's objects 1 and 2
