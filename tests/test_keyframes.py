import numpy as np

from operators.keyframes import KeyframeConfig, KeyframePolicy, reanchor_regions
from operators.records import Instances


def _instances(areas, scores):
    masks = np.zeros((len(areas), 100, 100), bool)
    for i, area in enumerate(areas):
        masks[i].flat[:area] = True
    inst = Instances.from_masks(masks, scores, [0] * len(areas), 100, 100)
    return inst.with_track_ids(list(range(1, len(areas) + 1)))


def test_interval_and_prompt_triggers():
    policy = KeyframePolicy(KeyframeConfig(every=4))
    decisions = [policy.decide(has_new_prompts=(i == 0)) for i in range(9)]
    assert decisions == ["prompt", None, None, None, "interval", None, None, None, "interval"]


def test_low_confidence_for_m_frames_triggers_once():
    policy = KeyframePolicy(KeyframeConfig(every=100, low_confidence=0.4, low_confidence_frames=3))
    assert policy.decide(True) == "prompt"
    for _ in range(2):
        policy.observe_instances(_instances([500], [0.2]))
        assert policy.decide(False) is None
    policy.observe_instances(_instances([500], [0.2]))
    assert policy.decide(False) == "low_confidence"
    policy.observe_instances(_instances([500], [0.9]))
    assert policy.decide(False) is None


def test_low_confidence_is_judged_against_the_score_the_last_keyframe_gave():
    """An object the segmenter always scores low is not re-checked every few frames; its score falling is."""
    policy = KeyframePolicy(KeyframeConfig(every=100, low_confidence=0.35, low_confidence_frames=2))
    policy.decide(True)
    policy.observe_keyframe(_instances([500], [0.32]))
    for _ in range(5):
        assert policy.decide(False) is None
        policy.observe_instances(_instances([500], [0.3]))  # below 0.35, but as good as the keyframe found it
    policy.observe_instances(_instances([500], [0.2]))  # under 0.7 of the keyframe's 0.32 ...
    assert policy.decide(False) is None
    policy.observe_instances(_instances([500], [0.2]))  # ... for the second frame running
    assert policy.decide(False) == "low_confidence"


def test_area_jump_triggers():
    policy = KeyframePolicy(KeyframeConfig(every=100, area_jump=0.5))
    policy.decide(True)
    policy.observe_instances(_instances([1000], [0.9]))
    assert policy.decide(False) is None
    policy.observe_instances(_instances([1300], [0.9]))  # +30%
    assert policy.decide(False) is None
    policy.observe_instances(_instances([2100], [0.9]))  # +62%
    assert policy.decide(False) == "area_jump"


def test_scene_cut_triggers_on_a_new_shot_only():
    rng = np.random.default_rng(0)
    policy = KeyframePolicy(KeyframeConfig(every=100))
    policy.decide(True)
    green = np.zeros((120, 160, 3), np.uint8)
    green[..., 1] = 180
    for _ in range(3):
        noisy = np.clip(green + rng.integers(-8, 8, green.shape), 0, 255).astype(np.uint8)
        policy.observe_frame(noisy)
        assert policy.decide(False) is None
    red = np.zeros_like(green)
    red[..., 0] = 200
    policy.observe_frame(red)
    assert policy.decide(False) == "scene_cut"


def test_a_keyframe_that_corrects_a_mask_is_checked_once_a_frame_was_propagated_from_it():
    policy = KeyframePolicy(KeyframeConfig(every=100, area_jump=0.5))
    assert policy.decide(True) == "prompt"  # frame 0
    policy.observe_keyframe(_instances([400], [0.9]))
    assert policy.decide(False) is None  # frame 1, propagated
    policy.observe_instances(_instances([420], [0.9]))
    assert policy.decide(True) == "prompt"  # frame 2: a new prompt's keyframe finds the object 4x bigger
    policy.observe_keyframe(_instances([1600], [0.9]))
    assert policy.decide(False) is None  # frame 3, propagated from the corrected mask
    policy.observe_instances(_instances([1600], [0.9]))
    assert policy.decide(False) == "area_jump"  # frame 4 checks the flow on it
    policy.observe_keyframe(_instances([1650], [0.9]))  # it holds: no further check
    for _ in range(3):
        assert policy.decide(False) is None  # compared with the keyframe's areas, not the stale 400
        policy.observe_instances(_instances([1650], [0.9]))


def test_a_scene_cut_outranks_a_pending_reason_and_is_known_for_the_frame():
    policy = KeyframePolicy(KeyframeConfig(every=100, low_confidence_frames=1))
    grey = np.full((60, 80, 3), 90, np.uint8)
    policy.observe_frame(grey)
    policy.decide(True)
    policy.observe_frame(grey)
    policy.observe_instances(_instances([500], [0.1]))  # asks for a low_confidence keyframe
    red = np.zeros_like(grey)
    red[..., 0] = 200
    policy.observe_frame(red)
    assert policy.cut and policy.decide(False) == "scene_cut"
    policy.observe_frame(red)
    assert not policy.cut and policy.decide(False) is None  # the pending request was served by the cut's keyframe


def test_a_track_with_ill_posed_flow_is_reanchored_between_regular_keyframes_until_its_flow_is_measured():
    policy = KeyframePolicy(KeyframeConfig(every=10, ill_posed_flow=0.3, ill_posed_every=3))
    assert policy.decide(True) == "prompt"
    decisions = []
    for _ in range(12):
        policy.observe_instances(_instances([500, 500], [0.9, 0.9]), flow_support=np.array([0.9, 0.1]))
        decisions.append(policy.decide(False))
    # Re-anchoring keyframes do not delay the interval's (frames 10 and 20 after the prompt's).
    assert decisions == [None, None, "ill_posed_flow", None, None, "ill_posed_flow", None, None, "ill_posed_flow",
                         "interval", None, None]
    for _ in range(7):  # measured again: back to the regular interval alone
        policy.observe_instances(_instances([500, 500], [0.9, 0.9]), flow_support=np.array([0.9, 0.5]))
        assert policy.decide(False) is None
    assert policy.decide(False) == "interval"
    for off_config in (KeyframeConfig(every=10, ill_posed_flow=0.0), KeyframeConfig(every=10, ill_posed_every=0)):
        off = KeyframePolicy(off_config)
        off.decide(True)
        for _ in range(8):
            off.observe_instances(_instances([500], [0.9]), flow_support=np.array([0.0]))
            assert off.decide(False) is None


def _boxes(shape, boxes):
    masks = np.zeros((len(boxes),) + shape, bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    return Instances.from_masks(masks, [0.9] * len(boxes), [0] * len(boxes), *shape)


def test_reanchor_regions_surround_each_object_merge_when_they_overlap_and_give_up_on_most_of_the_frame():
    # Two 100-px objects far apart: each box grown by half its side (50 px), clipped to the frame.
    assert reanchor_regions(_boxes((720, 1280), [(100, 100, 200, 200), (1000, 500, 1100, 600)])) == [
        (50, 50, 250, 250), (950, 450, 1150, 650)]
    # Small objects get at least 32 px; grown boxes that overlap become one.
    assert reanchor_regions(_boxes((720, 1280), [(100, 100, 110, 110), (150, 100, 160, 110)])) == [(68, 68, 192, 142)]
    # Three boxes where the third bridges the first two: all merge.
    assert reanchor_regions(_boxes((720, 1280), [(100, 100, 120, 120), (300, 100, 320, 120), (160, 100, 260, 120)])) == [
        (68, 50, 352, 170)]
    assert reanchor_regions(_boxes((200, 200), [(40, 40, 160, 160)])) is None  # would cover most of the frame
    assert reanchor_regions(Instances.empty(720, 1280)) is None
    assert reanchor_regions(_boxes((720, 1280), [(0, 0, 0, 0)])) is None  # an empty mask has nowhere to search
