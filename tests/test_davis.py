"""DAVIS conventions end to end: objects: prompts from an annotation PNG, frame-folder videos, the eval command."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.clips import ClipSpec, make_clip
from operators.association import TrackAssigner
from operators.errors import InvalidPromptError
from operators.keyframes import KeyframeConfig
from operators.metrics import region_similarity
from operators.records import FrameRecord, Instances, Prompt
from operators.segmenters import build_segmenter
from operators.stream import StreamProcessor, local_submit, run_stream
from pipeline.evaluate import DavisSet, EvalReport, score_sequence
from pipeline.prompts import PromptBook
from pipeline.sources import open_video
from tests.davis_layout import write_annotation, write_sequence
from tests.test_cli import cli

THREE_OBJECTS = ClipSpec(seed=5, num_frames=24, kinds=("red_blob", "blue_tile"), instances_per_kind=(2, 1))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(THREE_OBJECTS, tmp_path_factory.mktemp("davis") / "three.mp4")


def _stream(clip, prompts):
    records = []
    processor = StreamProcessor("s", str(clip.path), prompts, keyframes=KeyframeConfig(every=6))
    with open_video(clip.path) as video:
        run_stream(video.frames(), processor, local_submit(build_segmenter("default")), records.append)
    return records


def test_objects_prompts_give_each_object_its_index_as_track_id(clip, tmp_path):
    # Indices 2, 3 and 5 (not 1..3): each object's index is its id, whatever the others'.
    indices = dict(zip(sorted(clip.masks[0]), (5, 2, 3)))
    write_annotation(tmp_path / "00000.png", {indices[o]: m for o, m in clip.masks[0].items()})
    prompts = PromptBook.from_cli([f"objects:{tmp_path / '00000.png'}"]).default
    records = _stream(clip, prompts)
    for obj, index in indices.items():
        for record in (records[0], records[-1]):
            mine = record.instances[record.instances.track_ids == index]
            assert len(mine) == 1 and mine.prompt_ids[0] == index
            assert region_similarity(mine.masks[0], clip.masks[record.frame_index][obj]) > 0.7
    others = {int(t) for r in records for t in r.instances.track_ids} - set(indices.values())
    assert all(t > 5 for t in others)  # instances the prompts also find take ids above the asked ones


def test_an_asked_id_a_track_had_already_gives_the_next_free_one():
    square = np.zeros((40, 40), bool)
    square[5:15, 5:15] = True
    other = np.zeros((40, 40), bool)
    other[25:35, 25:35] = True
    assigner = TrackAssigner()
    first = assigner.assign_keyframe(Instances.from_masks([square], [0.9], [0], 40, 40), Instances.empty(40, 40), 0)
    assert first.track_ids.tolist() == [1]
    late = Prompt(4, "mask", 3, mask=other, track_id=1)  # id 1 is taken: the object gets 2
    found = Instances.from_masks([square, other], [0.9, 0.9], [0, 4], 40, 40)
    second = assigner.assign_keyframe(found, first, 3, named=[late])
    assert sorted(zip(second.prompt_ids.tolist(), second.track_ids.tolist())) == [(0, 1), (4, 2)]
    # A detection of the prompt that misses its mask is another instance of the kind: it does not take the id.
    elsewhere = Prompt(7, "mask", 5, mask=square, track_id=9)
    third = assigner.assign_keyframe(Instances.from_masks([other], [0.9], [7], 40, 40), Instances.empty(40, 40), 5,
                                     named=[elsewhere])
    assert third.track_ids.tolist() == [3]


def test_an_annotation_of_another_size_is_named_with_the_frame(clip, tmp_path):
    write_annotation(tmp_path / "small.png", {1: np.ones((10, 12), bool)})
    prompts = PromptBook.from_cli([f"objects:{tmp_path / 'small.png'}"]).default
    with pytest.raises(InvalidPromptError, match=r"mask is 12x10, the frame is 320x240") as caught:
        _stream(clip, prompts)
    assert caught.value.frame_index == 0


# -- eval -------------------------------------------------------------------------------------------------------

SEQUENCES = {"shapes": ClipSpec(seed=21, num_frames=12, kinds=("red_blob", "blue_tile"), instances_per_kind=1),
             "tiles": ClipSpec(seed=22, num_frames=12, kinds=("blue_tile",), instances_per_kind=2, speed=1.0)}


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis-root")
    truth = {name: write_sequence(root, name, spec) for name, spec in SEQUENCES.items()}
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("shapes\ntiles\n")
    return root, truth


def _records_from(truth: list[dict[int, np.ndarray]], shift: int = 0) -> str:
    """frames.jsonl lines whose track k is ground-truth object k, moved ``shift`` px right."""
    lines = []
    for t, masks in enumerate(truth):
        ids = sorted(masks)
        moved = [np.roll(masks[k], shift, axis=1) for k in ids]
        h, w = moved[0].shape
        instances = Instances.from_masks(moved, [0.9] * len(ids), ids, h, w).with_track_ids(ids)
        lines.append(json.dumps(FrameRecord("s", t, t / 30, "keyframe", instances).to_dict()))
    return "\n".join(lines) + "\n"


def test_scores_of_the_ground_truth_are_exactly_one_and_of_a_shift_the_reference_formulas(davis_root, tmp_path):
    from tests.test_metrics import reference_f_measure, reference_iou, reference_statistics

    root, truth = davis_root
    davis = DavisSet.open(root, set_file=Path("ImageSets/2017/val.txt"))
    sequence = davis.sequences[0]
    (tmp_path / "exact.jsonl").write_text(_records_from(truth["shapes"]))
    exact = EvalReport(davis, {"shapes": score_sequence(sequence, tmp_path / "exact.jsonl")}, {})
    assert exact.global_row() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]
    (tmp_path / "shifted.jsonl").write_text(_records_from(truth["shapes"], shift=6))
    shifted = score_sequence(sequence, tmp_path / "shifted.jsonl")
    assert sorted(shifted) == [1, 2] and all(len(o.j) == 10 for o in shifted.values())  # frames 1..10 of 12
    for k, scores in shifted.items():
        frames = truth["shapes"][1:-1]
        j = np.array([reference_iou(f[k], np.roll(f[k], 6, axis=1)) for f in frames])
        f = np.array([reference_f_measure(np.roll(f[k], 6, axis=1), f[k]) for f in frames])
        ours = scores.j_statistics, scores.f_statistics
        expected = reference_statistics(j), reference_statistics(f)
        for stats, (mean, recall, decay) in zip(ours, expected):
            assert (stats.mean, stats.recall, stats.decay) == pytest.approx((mean, recall, decay), abs=1e-6)


@pytest.mark.slow
def test_eval_command_runs_the_protocol_and_writes_the_reference_tables(davis_root, tmp_path):
    root, _ = davis_root
    result = cli("eval", str(root), "--set", "ImageSets/2017/val.txt", "--out", str(tmp_path / "out"),
                 "--no-progress", "--keyframe-every", "5")
    assert result.returncode == 0, result.stderr
    with (tmp_path / "out" / "global_results-val.csv").open() as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    jf, j_mean, j_recall, _, f_mean, _, _ = map(float, rows[1])
    assert jf > 0.8 and j_recall == 1.0 and jf == pytest.approx((j_mean + f_mean) / 2, abs=1e-3)
    with (tmp_path / "out" / "per-sequence_results-val.csv").open() as file:
        per_object = list(csv.reader(file))
    assert per_object[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in per_object[1:]] == ["shapes_1", "shapes_2", "tiles_1", "tiles_2"]
    assert all(float(r[1]) > 0.7 for r in per_object[1:])
    assert "Global results for val" in result.stdout and "tiles_2" in result.stdout
    full = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert full["global"]["J&F-Mean"] == pytest.approx(jf, abs=5e-4) and not full["failed"]
    assert set(full["sequences"]["tiles"]["objects"]["2"]["J"]) == {"mean", "recall", "decay"}
    assert len(list((tmp_path / "out" / "shapes" / "masks").glob("*.png"))) == 12  # DAVIS's results format too


def _said(result) -> str:
    """stderr with the console's line wrapping undone."""
    return " ".join(result.stderr.split())


def test_eval_names_a_root_without_the_layout_or_a_sequence_without_annotation(davis_root, tmp_path):
    root, _ = davis_root
    result = cli("eval", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "not a DAVIS layout: JPEGImages/480p is missing" in _said(result)
    assert "Traceback" not in result.stderr
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "Annotations" / "480p" / "tiles" / "00004.png").unlink()
    result = cli("eval", str(broken), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "sequence tiles has no annotation Annotations/480p/tiles/00004.png" in _said(result)
    (broken / "ImageSets" / "2017" / "val.txt").write_text("shapes\nbear\n")
    result = cli("eval", str(broken), "--set", "ImageSets/2017/val.txt", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "sequence bear has no frame folder" in _said(result)
    (broken / "ImageSets" / "2017" / "val.txt").write_text("../480p/shapes\n")
    result = cli("eval", str(broken), "--set", "ImageSets/2017/val.txt", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "'../480p/shapes' is not a sequence name" in _said(result)
    assert not (tmp_path / "out").exists()  # refused before any work
