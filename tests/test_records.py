"""Instances crossing a process boundary: exact masks back, and a size that follows the objects, not the frame."""

import json
import pickle

import numpy as np
import pytest

from operators.records import FrameRecord, Instances, Prompt, PromptError


def _instances(masks: np.ndarray) -> Instances:
    n = len(masks)
    return Instances(masks=masks, scores=np.linspace(0.5, 0.9, n, dtype=np.float32),
                     prompt_ids=np.zeros(n, np.int32), track_ids=np.arange(1, n + 1, dtype=np.int64),
                     embeddings=np.ones((n, 4), np.float32))


def test_pickled_instances_come_back_equal_for_every_kind_of_mask():
    rng = np.random.default_rng(0)
    masks = np.zeros((5, 37, 53), bool)
    masks[1] = True  # the whole frame
    masks[2, 3:9, 40:53] = True  # touching the right edge
    masks[2, 5, 45] = False  # with a hole
    masks[3] = rng.random((37, 53)) < 0.3  # scattered pixels
    masks[4, 36, 0] = True  # a single corner pixel; masks[0] stays empty
    record = FrameRecord("cam", 7, 0.28, "propagated", _instances(masks))
    restored = pickle.loads(pickle.dumps(record))
    np.testing.assert_array_equal(restored.instances.masks, masks)
    assert restored.instances.masks.dtype == bool and restored.instances.masks.flags.writeable
    assert restored.to_dict() == record.to_dict()
    np.testing.assert_array_equal(restored.instances.embeddings, record.instances.embeddings)


def test_no_instances_keep_their_frame_size():
    restored = pickle.loads(pickle.dumps(Instances.empty(720, 1280)))
    assert restored.masks.shape == (0, 720, 1280) and len(restored) == 0


def test_a_small_object_in_an_hd_frame_pickles_to_its_own_size():
    masks = np.zeros((1, 720, 1280), bool)
    masks[0, 100:164, 200:264] = True  # 64 x 64 pixels
    size = len(pickle.dumps(_instances(masks)))
    assert size < 64 * 64 // 8 + 2048, size  # its box's bits plus a fixed overhead; the frame's bits are 115 kB


def test_instances_found_in_a_crop_are_placed_on_the_frame():
    crop = np.zeros((2, 20, 30), bool)
    crop[0, 5:10, 0:4] = True
    crop[1, 19, 29] = True
    placed = _instances(crop).placed((100, 50, 130, 70), 120, 160)
    assert placed.shape == (120, 160)
    np.testing.assert_array_equal(placed.masks[:, 50:70, 100:130], crop)
    assert placed.areas.tolist() == crop.sum(axis=(1, 2)).tolist()
    np.testing.assert_array_equal(placed.scores, _instances(crop).scores)
    with pytest.raises(ValueError, match="masks are"):
        _instances(crop).placed((0, 0, 10, 10), 120, 160)


def test_a_box_reaching_past_the_frame_is_clipped_and_one_wholly_outside_is_refused():
    box = Prompt(0, "box", box=(-10.0, 30.0, 50.0, 200.0))
    mask = box.to_mask(100, 80)
    assert mask.shape == (100, 80) and mask.sum() == 50 * 70 and mask[30:100, 0:50].all()
    with pytest.raises(PromptError, match=r"box \(90.0, 0.0, 120.0, 10.0\) lies entirely outside the 80x100 frame"):
        Prompt(0, "box", box=(90.0, 0.0, 120.0, 10.0)).validate(100, 80)


def test_a_record_s_reason_is_one_its_kind_has():
    from operators.keyframes import KeyframeConfig, KeyframePolicy
    from operators.state import StateError

    empty = Instances.empty(4, 6)
    for kind, reason in [("keyframe", "interval"), ("keyframe", "ill_posed_flow"), ("propagated", None),
                         ("skipped", "no_prompt_yet"), ("skipped", "dropped_latency")]:
        assert FrameRecord("s", 0, None, kind, empty, reason=reason).reason == reason
    for kind, reason, message in [("keyframe", "because", "'because' is not a reason for a keyframe frame"),
                                  ("propagated", "interval", "'interval' is not a reason for a propagated frame"),
                                  ("skipped", None, "None is not a reason for a skipped frame"),
                                  ("dropped", None, "unknown kind 'dropped'; one of keyframe, propagated, skipped")]:
        with pytest.raises(ValueError, match=message):
            FrameRecord("s", 3, None, kind, empty, reason=reason)
    data = FrameRecord("s", 3, 0.1, "keyframe", empty, reason="scene_cut").to_dict()
    assert FrameRecord.from_dict(data).reason == "scene_cut"
    with pytest.raises(ValueError, match="frame 3: 'cut' is not a reason"):
        FrameRecord.from_dict({**data, "reason": "cut"})  # a frames.jsonl read back is checked too

    state = KeyframePolicy(KeyframeConfig(), pending_reason="area_jump").to_state()
    assert KeyframePolicy.from_state(KeyframeConfig(), state).pending_reason == "area_jump"
    with pytest.raises(StateError, match="unknown keyframe reason 'cut'"):
        KeyframePolicy.from_state(KeyframeConfig(), {**state, "pending_reason": "cut"})


def test_a_record_s_json_is_made_once_and_is_its_dict():
    masks = np.zeros((2, 24, 32), bool)
    masks[0, 2:9, 3:9] = masks[1, 10:20, 12:30] = True
    record = FrameRecord("s", 7, 0.25, "propagated", _instances(masks))
    text = record.to_json()
    assert record.to_json() is text  # the second sink gets the same string, not a new encoding
    assert record.to_dict() == json.loads(text) and record.to_dict()["objects"][1]["bbox"] == [12.0, 10.0, 18.0, 10.0]
