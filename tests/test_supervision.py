"""Instances <-> supervision's ``sv.Detections`` on a real stream's instances: every field back unchanged,
supervision's inclusive ``xyxy`` max one below ``Instances.boxes_xyxy``'s exclusive one."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import supervision as sv
from supervision.detection.compact_mask import CompactMask

from bench.clips import ClipSpec, make_clip
from operators.records import Instances
from pipeline.session import StreamSession


@pytest.fixture(scope="module")
def tracked(tmp_path_factory) -> list[Instances]:
    """The instances of a real stream: two prompted objects tracked by the default segmenter over 6 frames."""
    clip = make_clip(ClipSpec(seed=5, num_frames=6, kinds=("red_blob", "blue_tile"), instances_per_kind=1),
                     tmp_path_factory.mktemp("sv") / "clip.mp4")
    boxes = [clip.suggested_prompt(kind, "box").box for kind in ("red_blob", "blue_tile")]
    prompts = ["box:" + ",".join(str(int(v)) for v in box) for box in boxes]
    instances = [record.instances for record in StreamSession.open(clip.path, prompts=prompts)]
    assert all(len(i) >= 2 and (i.track_ids > 0).all() for i in instances)
    return instances


def _same(a: Instances, b: Instances) -> None:
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)
    assert np.array_equal(a.prompt_ids, b.prompt_ids) and np.array_equal(a.track_ids, b.track_ids)
    assert a.scores.dtype == b.scores.dtype and a.track_ids.dtype == b.track_ids.dtype


def test_fields_map_and_the_box_max_is_inclusive(tracked):
    for instances in tracked:
        detections = instances.to_supervision()
        assert np.array_equal(detections.mask, instances.masks)
        assert np.array_equal(detections.confidence, instances.scores)
        assert np.array_equal(detections.class_id, instances.prompt_ids)
        assert np.array_equal(detections.tracker_id, instances.track_ids)
        assert np.array_equal(detections.xyxy, sv.mask_to_xyxy(instances.masks))  # supervision's own boxes
        assert np.array_equal(detections.xyxy[:, :2], instances.boxes_xyxy[:, :2])
        assert np.array_equal(detections.xyxy[:, 2:] + 1, instances.boxes_xyxy[:, 2:])
        assert np.array_equal(detections.area, instances.areas)


def test_round_trip_gives_the_instances_back(tracked):
    for instances in tracked:
        _same(Instances.from_supervision(instances.to_supervision(), frame_size=instances.shape), instances)


def test_supervision_operations_carry_through(tracked):
    instances = tracked[-1]
    detections = instances.to_supervision()
    best = Instances.from_supervision(detections[detections.confidence == detections.confidence.max()])
    _same(best, instances[instances.scores == instances.scores.max()])
    merged = Instances.from_supervision(sv.Detections.merge([detections, detections[[0]]]))
    _same(merged, Instances.concatenate([instances, instances[[0]]], *instances.shape))


def test_embeddings_travel_in_data_and_untracked_instances_have_no_tracker_ids(tracked):
    instances = tracked[0]
    untracked = Instances.from_masks(instances.masks, instances.scores, instances.prompt_ids, *instances.shape,
                                     embeddings=np.arange(len(instances) * 3, dtype=np.float32).reshape(-1, 3))
    detections = untracked.to_supervision()
    assert detections.tracker_id is None
    back = Instances.from_supervision(detections)
    _same(back, untracked)
    assert np.array_equal(back.embeddings, untracked.embeddings)


def test_a_compact_mask_and_an_empty_frame_convert(tracked):
    instances = tracked[0]
    xyxy = sv.mask_to_xyxy(instances.masks)
    compact = sv.Detections(xyxy=xyxy, mask=CompactMask.from_dense(instances.masks, xyxy, instances.shape),
                            confidence=instances.scores, class_id=instances.prompt_ids,
                            tracker_id=instances.track_ids)
    _same(Instances.from_supervision(compact), instances)
    empty = Instances.from_supervision(Instances.empty(4, 6).to_supervision())
    assert empty.shape == (4, 6) and len(empty) == 0
    assert len(Instances.from_supervision(sv.Detections.empty(), frame_size=(4, 6))) == 0


def test_boxes_without_masks_fill_their_inclusive_extent():
    detections = sv.Detections(xyxy=np.array([[2, 1, 4, 2], [0, 0, 0, 0]], np.float32))
    instances = Instances.from_supervision(detections, frame_size=(5, 6))
    assert instances.masks[0].sum() == 3 * 2 and instances.masks[0, 1:3, 2:5].all()
    assert instances.masks[1].sum() == 1 and instances.masks[1, 0, 0]  # a one-pixel box
    assert np.array_equal(sv.mask_to_xyxy(instances.masks), detections.xyxy)
    assert (instances.scores == 1).all() and (instances.prompt_ids == 0).all() and (instances.track_ids == -1).all()


def test_mismatched_or_missing_sizes_are_refused(tracked):
    with pytest.raises(ValueError, match="need frame_size"):
        Instances.from_supervision(sv.Detections(xyxy=np.zeros((1, 4), np.float32)))
    with pytest.raises(ValueError, match=r"the frame is 10x10"):
        Instances.from_supervision(tracked[0].to_supervision(), frame_size=(10, 10))


def test_without_supervision_the_error_names_the_extra(tracked, monkeypatch):
    monkeypatch.setitem(sys.modules, "supervision", None)  # what an install without the extra sees
    with pytest.raises(ImportError, match=r"pip install 'xsam-pipeline\[supervision\]'"):
        tracked[0].to_supervision()
