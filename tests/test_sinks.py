"""Sinks write real files that independent readers (json, pycocotools, PIL, PyAV) read back correctly."""

from __future__ import annotations

import json
import multiprocessing
import os

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from operators.errors import OutputError
from operators.records import FrameRecord, Instances
from operators.sinks import JsonlSink, PalettePngSink, Sink, StreamInfo, VideoSink, build_sinks

H, W = 48, 64


def make_instances(boxes, track_ids, scores=None, height=H, width=W) -> Instances:
    """Instances whose masks are the given ``(x0, y0, x1, y1)`` rectangles."""
    masks = np.zeros((len(boxes), height, width), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    scores = scores if scores is not None else [0.9] * len(boxes)
    return Instances.from_masks(masks, scores, list(range(len(boxes))), height, width).with_track_ids(track_ids)


def make_record(frame_index: int, instances: Instances, image=None) -> FrameRecord:
    return FrameRecord("cam1", frame_index, frame_index / 10, "keyframe", instances, image=image)


def stream(width=W, height=H) -> StreamInfo:
    return StreamInfo("cam1", "file:///clip.mp4", width, height, 10.0)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- JSONL -----------------------------------------------------------------------------------------


def moving_square_records(n: int) -> list[FrameRecord]:
    """Frame i: a 10x8 box moving right by i pixels (track 1) and, with a hole, a 20x20 box (track 2)."""
    records = []
    for i in range(n):
        instances = make_instances([(5 + i, 4, 15 + i, 12), (30, 20, 50, 40)], [1, 2])
        instances.masks[1, 25:30, 35:40] = False  # a hole, so RLE is not just one run per column
        records.append(make_record(i, instances))
    return records


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under numpy 2
def test_jsonl_roundtrips_masks_bbox_and_area_through_pycocotools(tmp_path):
    records = moving_square_records(4)
    sink = JsonlSink(tmp_path)
    sink.open(stream())
    for record in records:
        sink.write(record)
    summary = sink.close()

    path = tmp_path / "cam1" / "frames.jsonl"
    assert summary == {"sink": "jsonl", "path": str(path), "frames": 4, "frames_kept": 0}
    lines = read_jsonl(path)
    assert [line["frame_index"] for line in lines] == [0, 1, 2, 3]
    for record, line in zip(records, lines):
        assert (line["height"], line["width"], line["kind"]) == (H, W, "keyframe")
        assert [obj["track_id"] for obj in line["objects"]] == [1, 2]
        for original, obj in zip(record.instances.masks, line["objects"]):
            rle = {"size": obj["rle"]["size"], "counts": obj["rle"]["counts"].encode()}
            np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), original)
        i = record.frame_index
        assert line["objects"][0]["bbox"] == [5.0 + i, 4.0, 10.0, 8.0]
        assert line["objects"][0]["area"] == 80
        assert line["objects"][1]["bbox"] == [30.0, 20.0, 20.0, 20.0]
        assert line["objects"][1]["area"] == 400 - 25


def test_jsonl_lines_are_on_disk_before_close(tmp_path):
    sink = JsonlSink(tmp_path)
    sink.open(stream())
    for record in moving_square_records(3):
        sink.write(record)
    assert [line["frame_index"] for line in read_jsonl(tmp_path / "cam1" / "frames.jsonl")] == [0, 1, 2]
    sink.close()


def test_jsonl_resume_keeps_only_frames_before_start_and_drops_torn_line(tmp_path):
    records = moving_square_records(6)
    first = JsonlSink(tmp_path)
    first.open(stream())
    for record in records[:5]:
        first.write(record)
    first.close()
    path = tmp_path / "cam1" / "frames.jsonl"
    with open(path, "ab") as f:  # a kill mid-write leaves half a line
        f.write(b'{"stream_id":"cam1","frame_index":5,"obj')

    resumed = JsonlSink(tmp_path)
    resumed.open(stream(), start_frame=3)
    for record in records[3:]:
        resumed.write(record)
    summary = resumed.close()

    assert [line["frame_index"] for line in read_jsonl(path)] == [0, 1, 2, 3, 4, 5]
    assert (summary["frames"], summary["frames_kept"]) == (6, 3)

    torn_only = JsonlSink(tmp_path)
    with open(path, "ab") as f:
        f.write(b'{"stream_id":"cam1","frame_in')
    torn_only.open(stream(), start_frame=10)
    assert torn_only.close()["frames_kept"] == 6
    assert path.read_bytes().endswith(b"}\n")


def test_jsonl_fresh_open_replaces_an_old_file(tmp_path):
    old = JsonlSink(tmp_path)
    old.open(stream())
    for record in moving_square_records(3):
        old.write(record)
    old.close()
    new = JsonlSink(tmp_path)
    new.open(stream())
    new.write(moving_square_records(1)[0])
    new.close()
    assert [line["frame_index"] for line in read_jsonl(tmp_path / "cam1" / "frames.jsonl")] == [0]


# --- palette PNG -----------------------------------------------------------------------------------

# First entries of the published DAVIS / PASCAL VOC palette, and its last one.
DAVIS_HEAD = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
              (128, 128, 128), (64, 0, 0), (192, 0, 0)]


def test_png_is_indexed_with_davis_palette_track_values_score_overlap_and_wrap(tmp_path):
    instances = make_instances(
        [(0, 0, 20, 20), (10, 10, 30, 30), (40, 30, 60, 45), (50, 0, 60, 10)],
        track_ids=[1, 2, 300, -1],
        scores=[0.9, 0.5, 0.7, 0.99],
    )
    sink = PalettePngSink(tmp_path)
    sink.open(stream())
    sink.write(make_record(7, instances))
    sink.write(make_record(8, make_instances([], [])))
    summary = sink.close()

    masks_dir = tmp_path / "cam1" / "masks"
    assert summary == {"sink": "png", "path": str(masks_dir), "frames": 2}
    image = Image.open(masks_dir / "000007.png")
    assert image.mode == "P"
    palette = image.getpalette()
    assert len(palette) == 768
    colors = [tuple(palette[3 * k: 3 * k + 3]) for k in range(256)]
    assert colors[:10] == DAVIS_HEAD
    assert colors[255] == (224, 224, 192)
    assert len(set(colors)) == 256

    labels = np.array(image)
    assert labels[5, 5] == 1  # track 1 alone
    assert labels[15, 15] == 1  # overlap: track 1 (0.9) beats track 2 (0.5)
    assert labels[25, 25] == 2  # track 2 alone
    assert labels[35, 50] == 46  # track 300 wraps: (300 - 1) % 254 + 1
    assert labels[5, 55] == 0  # unassociated (-1) stays background
    assert set(np.unique(labels)) == {0, 1, 2, 46}
    assert (labels == 1).sum() == 400 and (labels == 2).sum() == 400 - 100

    empty = Image.open(masks_dir / "000008.png")
    assert empty.mode == "P" and not np.array(empty).any()


# --- MP4 -------------------------------------------------------------------------------------------


def test_mp4_decodes_with_frame_count_size_and_tinted_masks(tmp_path):
    width, height, n = 128, 96, 6
    source = np.full((height, width, 3), 100, np.uint8)
    sink = VideoSink(tmp_path)
    assert sink.needs_image
    sink.open(stream(width, height))
    for i in range(n):
        instances = make_instances([(40, 40, 80, 80)], [1], height=height, width=width)
        sink.write(make_record(i, instances, image=source))
    summary = sink.close()

    path = tmp_path / "cam1" / "annotated.mp4"
    assert summary == {"sink": "mp4", "path": str(path), "frames": n}
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        frames = [frame.to_ndarray(format="rgb24").astype(int) for frame in container.decode(video)]
    assert len(frames) == n
    for frame in frames:
        assert frame.shape == (height, width, 3)
        inside = frame[55:65, 55:65].reshape(-1, 3).mean(axis=0)
        # Track 1 is DAVIS red (128, 0, 0): blended at 0.5 over grey 100 -> about (114, 50, 50).
        assert inside[0] > 105 and inside[1] < 65 and inside[2] < 65
        background = frame[85:95, 100:125]
        assert np.abs(background - 100).max() <= 4


def test_mp4_requires_images(tmp_path):
    sink = VideoSink(tmp_path)
    sink.open(stream())
    with pytest.raises(ValueError, match="frame 0.*no image"):
        sink.write(make_record(0, make_instances([], [])))
    sink.close()


def _numbered(i: int) -> np.ndarray:
    """A frame whose white band is at x = 6 * i: which frame a decoded one was."""
    image = np.zeros((H, W, 3), np.uint8)
    image[:, 6 * i : 6 * i + 6] = 255
    return image


def _decoded_numbers(path) -> list[int]:
    with av.open(str(path)) as container:
        return [int(np.argmax(f.to_ndarray(format="rgb24")[H // 2, :, 0])) // 6 for f in container.decode(video=0)]


def _write_then_die(out_dir) -> None:
    sink = VideoSink(out_dir)
    sink.open(stream())
    for i in range(40):
        sink.write(make_record(i, make_instances([], []), image=_numbered(i % 10)))
        if i == 4:
            sink.checkpoint()  # frames 0-4 are a finished part
    os._exit(9)  # killed mid-part: no close


def test_mp4_resumed_after_an_interruption_is_one_video_of_every_frame(tmp_path):
    """Parts end at checkpoints; a run killed at frame 39 (checkpoint at 5) resumes at 5 into one annotated.mp4."""
    child = multiprocessing.get_context("spawn").Process(target=_write_then_die, args=(tmp_path,))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 9
    parts = tmp_path / "cam1" / "annotated.parts"
    assert sorted(p.name for p in parts.iterdir()) == ["from_000000.mp4", "from_000005.mp4"]
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(parts / "from_000005.mp4"))  # no index: what a killed run leaves

    resumed = VideoSink(tmp_path)
    resumed.open(stream(), start_frame=5)
    for i in range(5, 10):
        resumed.write(make_record(i, make_instances([], []), image=_numbered(i)))
    summary = resumed.close()
    path = tmp_path / "cam1" / "annotated.mp4"
    assert summary == {"sink": "mp4", "path": str(path), "frames": 10}
    assert _decoded_numbers(path) == list(range(10))
    assert not parts.exists()


def test_mp4_checkpoints_leave_one_video_with_the_frames_in_order(tmp_path):
    sink = VideoSink(tmp_path)
    sink.open(stream())
    sink.checkpoint()  # nothing written yet: no empty part
    for i in range(7):
        sink.write(make_record(i, make_instances([], []), image=_numbered(i)))
        if i in (2, 3):
            sink.checkpoint()
    assert sink.close()["frames"] == 7
    with av.open(str(tmp_path / "cam1" / "annotated.mp4")) as container:
        times = [frame.time for frame in container.decode(video=0)]
    assert times == pytest.approx([i / 10 for i in range(7)], abs=1e-3)  # the stream's 10 fps, no gap at a seam
    assert _decoded_numbers(tmp_path / "cam1" / "annotated.mp4") == list(range(7))


# --- building and failures -------------------------------------------------------------------------


def test_build_sinks_by_name_and_needs_image(tmp_path):
    sinks = build_sinks(["jsonl", "png", "mp4"], tmp_path / "new" / "out")
    assert [type(s) for s in sinks] == [JsonlSink, PalettePngSink, VideoSink]
    assert [s.needs_image for s in sinks] == [False, False, True]
    assert all(isinstance(s, Sink) for s in sinks)
    assert (tmp_path / "new" / "out").is_dir()


def test_build_sinks_rejects_unknown_and_repeated_names(tmp_path):
    with pytest.raises(ValueError, match="unknown sink 'csv'; choose from jsonl, png, mp4"):
        build_sinks(["jsonl", "csv"], tmp_path)
    with pytest.raises(ValueError, match="'png' named more than once"):
        build_sinks(["png", "png"], tmp_path)


@pytest.mark.parametrize("names", [["jsonl"], ["png"], ["mp4"]])
def test_unwritable_out_dir_raises_output_error_naming_path(tmp_path, names):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    target = blocker / "out"
    with pytest.raises(OutputError) as caught:
        build_sinks(names, target)
    assert caught.value.source == str(target)
    assert "Not a directory" in caught.value.reason
    assert str(target) in str(caught.value)


def test_stream_id_must_be_a_plain_folder_name(tmp_path):
    sink = JsonlSink(tmp_path)
    with pytest.raises(OutputError, match="not usable as a folder name"):
        sink.open(StreamInfo("../escape", "x", W, H, 10.0))
