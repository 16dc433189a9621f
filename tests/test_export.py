"""``xsam-pipeline export`` on the results of a real ``run``: each format decoded with pycocotools gives
the masks of ``frames.jsonl`` back pixel for pixel; bad results folders are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from bench.clips import ClipSpec, make_clip
from operators.exports import find_videos
from operators.exports.mot import disjoint
from operators.exports.youtube_vis import write_youtube_vis
from operators.records import FrameRecord, Instances
from test_cli import cli

FRAMES = 8


def _box(clip, kind: str) -> str:
    return "box:" + ",".join(str(int(v)) for v in clip.suggested_prompt(kind, "box").box)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Two videos, two prompted objects each, run by the real CLI."""
    root = tmp_path_factory.mktemp("export")
    clips = [make_clip(ClipSpec(seed=seed, num_frames=FRAMES, kinds=("red_blob", "blue_tile"), instances_per_kind=1),
                       root / f"{name}.mp4") for seed, name in ((3, "alpha"), (4, "beta"))]
    prompts = [_box(clips[0], "red_blob"), _box(clips[0], "blue_tile")]
    out = root / "out"
    result = cli("run", *(str(c.path) for c in clips), "--prompt", prompts[0], "--prompt", prompts[1],
                 "--out", str(out), "--sink", "jsonl", "--no-progress")
    assert result.returncode == 0, result.stderr
    return out


def _records(out, name: str) -> list[FrameRecord]:
    return [FrameRecord.from_dict(json.loads(line)) for line in (out / name / "frames.jsonl").read_text().splitlines()]


def _masks_by_track(record: FrameRecord) -> dict[int, np.ndarray]:
    return {int(t): m for t, m in zip(record.instances.track_ids, record.instances.masks)}


def _decode(segmentation: dict) -> np.ndarray:
    return coco_mask.decode({"size": segmentation["size"], "counts": segmentation["counts"].encode()}).astype(bool)


def test_youtube_vis_has_an_entry_per_track_and_every_frame_of_its_video(job, tmp_path):
    result = cli("export", str(job), "--format", "youtube-vis", "--output", str(tmp_path / "results.json"))
    assert result.returncode == 0, result.stderr
    assert "video_id 1: alpha" in result.stdout and "video_id 2: beta" in result.stdout
    entries = json.loads((tmp_path / "results.json").read_text())
    for video_id, name in ((1, "alpha"), (2, "beta")):
        records = _records(job, name)
        mine = [e for e in entries if e["video_id"] == video_id]
        tracks = sorted({t for r in records for t in _masks_by_track(r)})
        assert len(mine) == len(tracks) >= 2
        for entry, track in zip(mine, tracks):
            assert len(entry["segmentations"]) == FRAMES
            present = [r for r in records if track in _masks_by_track(r)]
            prompt = int(present[0].instances.prompt_ids[list(present[0].instances.track_ids).index(track)])
            assert entry["category_id"] == prompt
            scores = [float(r.instances.scores[list(r.instances.track_ids).index(track)]) for r in present]
            assert entry["score"] == pytest.approx(np.mean(scores), abs=1e-4)
            for record, segmentation in zip(records, entry["segmentations"]):
                mask = _masks_by_track(record).get(track)
                if mask is None:
                    assert segmentation is None
                else:
                    assert np.array_equal(_decode(segmentation), mask)


def test_coco_loads_in_pycocotools_and_gives_each_mask_back(job, tmp_path):
    output = tmp_path / "coco.json"
    result = cli("export", str(job), "--format", "coco", "--output", str(output), "--category-id", "7")
    assert result.returncode == 0, result.stderr
    coco = COCO(str(output))
    assert [v["name"] for v in coco.dataset["videos"]] == ["alpha", "beta"]
    assert coco.getCatIds() == [7] and len(coco.getImgIds()) == 2 * FRAMES
    for image in coco.loadImgs(coco.getImgIds()):
        record = _records(job, coco.dataset["videos"][image["video_id"] - 1]["name"])[image["frame_index"]]
        expected = _masks_by_track(record)
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert sorted(a["track_id"] for a in annotations) == sorted(expected)
        for annotation in annotations:
            mask = coco.annToMask(annotation).astype(bool)
            assert np.array_equal(mask, expected[annotation["track_id"]])
            assert annotation["area"] == mask.sum() and annotation["category_id"] == 7
            assert annotation["bbox"] == coco_mask.toBbox(coco_mask.encode(np.asfortranarray(mask, np.uint8))).tolist()


def _mots(path) -> dict[tuple[int, int], tuple[int, np.ndarray]]:
    found = {}
    for line in path.read_text().splitlines():
        frame, track, category, height, width, counts = line.split(" ")
        found[int(frame), int(track)] = (int(category), _decode({"size": [int(height), int(width)], "counts": counts}))
    return found


def test_mots_text_decodes_to_the_masks_made_disjoint(job, tmp_path):
    result = cli("export", str(job), "--format", "mots", "--output", str(tmp_path / "mots"))
    assert result.returncode == 0, result.stderr
    for name in ("alpha", "beta"):
        found, records = _mots(tmp_path / "mots" / f"{name}.txt"), _records(job, name)
        assert min(f for f, _ in found) == 1 and max(f for f, _ in found) == FRAMES  # MOTChallenge counts from 1
        for record in records:
            exported = {t: m for (f, t), (_, m) in found.items() if f == record.frame_index + 1}
            original = _masks_by_track(record)
            assert np.sum(list(exported.values()), axis=0).max() <= 1, "MOTS evaluators refuse overlapping masks"
            assert np.array_equal(np.any(list(exported.values()), axis=0), np.any(list(original.values()), axis=0))
            for track, mask in exported.items():
                assert not (mask & ~original[track]).any()
                if name == "alpha":  # its objects do not touch: every mask comes back whole
                    assert np.array_equal(mask, original[track])
            if name == "alpha":
                assert exported.keys() == original.keys()
    overlapping = sum((r.instances.masks.sum(0) > 1).any() for r in _records(job, "beta"))
    assert overlapping, "beta's prompts (drawn on alpha) overlap: the case MOTS needs resolved"
    categories = {c for c, _ in _mots(tmp_path / "mots" / "alpha.txt").values()}
    assert categories == {0, 1}  # the prompt ids


def test_one_video_exports_to_the_file_named(job, tmp_path):
    result = cli("export", str(job / "alpha"), "--format", "mots", "--output", str(tmp_path / "alpha.txt"))
    assert result.returncode == 0, result.stderr
    assert len(_mots(tmp_path / "alpha.txt")) == sum(len(r.instances) for r in _records(job, "alpha"))


def test_youtube_vis_writes_null_where_a_track_is_absent(tmp_path):
    masks = np.zeros((2, 6, 8), bool)
    masks[0, 1:3, 1:4], masks[1, 3:6, 4:8] = True, True
    both = Instances(masks, np.array([0.5, 0.7], np.float32), np.array([0, 1], np.int32), np.array([1, 2], np.int64))
    frames = [both, both[[1]], both[[0]]]
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "frames.jsonl").write_text("".join(
        json.dumps(FrameRecord("v", i, i / 30, "propagated", instances).to_dict()) + "\n"
        for i, instances in enumerate(frames)))
    write_youtube_vis(find_videos(tmp_path / "v"), tmp_path / "r.json")
    first, second = json.loads((tmp_path / "r.json").read_text())
    assert first["segmentations"][1] is None and second["segmentations"][2] is None
    assert np.array_equal(_decode(first["segmentations"][2]), masks[0]) and first["score"] == 0.5


def test_mots_gives_a_contested_pixel_to_the_higher_score():
    masks = np.zeros((2, 4, 6), bool)
    masks[0, 1:3, 0:4], masks[1, 1:4, 2:6] = True, True
    resolved = disjoint(Instances(masks, np.array([0.6, 0.9], np.float32), np.array([0, 1], np.int32),
                                  np.array([1, 2], np.int64)))
    assert np.array_equal(resolved.masks[1], masks[1])  # the higher score keeps all
    assert np.array_equal(resolved.masks[0], masks[0] & ~masks[1]) and resolved.masks[0].sum() == 4


def test_mot_boxes_of_several_videos_go_one_file_each(job, tmp_path):
    result = cli("export", str(job), "--format", "mot", "--output", str(tmp_path / "mot"))
    assert result.returncode == 0, result.stderr
    for name in ("alpha", "beta"):
        rows = [line.split(",") for line in (tmp_path / "mot" / f"{name}.txt").read_text().splitlines()]
        expected = {(r.frame_index + 1, o["track_id"]): (o["bbox"], o["score"])
                    for r in _records(job, name) for o in r.instances.object_dicts()}
        assert len(rows) == len(expected)
        for row in rows:
            bbox, score = expected[int(row[0]), int(row[1])]
            assert [float(v) for v in row[2:6]] == bbox and float(row[6]) == pytest.approx(score)
            assert row[7:] == ["-1", "-1", "-1"]


@pytest.mark.parametrize("damage, message", [
    (lambda lines: lines[:2] + ["{not json"] + lines[3:], "frames.jsonl: line 3 is not a frame record"),
    (lambda lines: lines[:1] + lines[2:], "frames.jsonl: line 2 holds frame 2, expected 1"),
    (lambda lines: lines[:1] + [json.dumps({"frame_index": 1})], "frames.jsonl: line 2 is not a frame record"),
])
def test_a_damaged_line_is_a_one_line_error_naming_the_file_and_line(job, tmp_path, damage, message):
    video = tmp_path / "alpha"
    video.mkdir()
    lines = (job / "alpha" / "frames.jsonl").read_text().splitlines()
    (video / "frames.jsonl").write_text("\n".join(damage(lines)) + "\n")
    output = tmp_path / "results.json"
    result = cli("export", str(video), "--format", "youtube-vis", "--output", str(output))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert f"{video}/{message}" in result.stderr
    assert not output.exists() and not list(tmp_path.glob(".results.json*")), "nothing half-written is left"


def test_a_folder_without_results_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("export", str(tmp_path / "empty"), "--format", "coco", "--output", str(tmp_path / "x.json"))
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert f"error: {tmp_path / 'empty'}: no frames.jsonl in this folder or its subfolders" in result.stderr


def test_a_negative_category_is_refused(job, tmp_path):
    result = cli("export", str(job), "--format", "coco", "--output", str(tmp_path / "x.json"), "--category-id", "-1")
    assert result.returncode == 2 and result.stderr.strip() == "error: --category-id: -1 is negative"
