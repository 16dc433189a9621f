"""Identity metrics on hand-computed cases, and against motmetrics where it is installed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from operators.identity_metrics import identity_scores
from operators.records import Instances

H = W = 20
EMPTY = np.zeros((H, W), bool)


def box(x: int, y: int, size: int = 4) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y : y + size, x : x + size] = True
    return mask


A, B = box(0, 0), box(10, 10)  # two objects that never overlap


def pred(*tracked: tuple[np.ndarray, int]) -> Instances:
    """Instances from (mask, track id) pairs."""
    if not tracked:
        return Instances.empty(H, W)
    masks = [m for m, _ in tracked]
    inst = Instances.from_masks(masks, [1.0] * len(masks), [0] * len(masks), H, W)
    return inst.with_track_ids([t for _, t in tracked])


def test_perfect_tracking():
    gt = [{1: A, 2: B}] * 3
    s = identity_scores([pred((A, 7), (B, 8))] * 3, gt)
    assert (s.gt, s.predictions, s.matches, s.misses, s.false_positives, s.id_switches) == (6, 6, 6, 0, 0, 0)
    assert s.mota == 1.0 and s.idf1 == 1.0 and s.mean_iou == 1.0
    assert s.track_of == {1: 7, 2: 8} and s.tracks_per_object == {1: 1, 2: 1} and s.spurious_tracks == ()


def test_a_track_on_the_background_is_spurious():
    stray = box(14, 0)
    s = identity_scores([pred((A, 1), (stray, 9))] * 2, [{1: A}] * 2)
    assert s.false_positives == 2 and s.spurious_tracks == (9,) and s.idfp == 2 and s.mota == 0.0


def test_swap_half_way():
    # Frames 0-1: A->1, B->2; frames 2-3: A->2, B->1. Two switches on frame 2.
    # IDTP per pair is 2 for all four pairs; the best matching keeps 2 + 2 = 4 of 8.
    gt = [{1: A, 2: B}] * 4
    preds = [pred((A, 1), (B, 2))] * 2 + [pred((A, 2), (B, 1))] * 2
    s = identity_scores(preds, gt)
    assert s.id_switches == 2 and {(w.frame, w.after_absence) for w in s.switches} == {(2, False)}
    assert s.mota == pytest.approx(1 - 2 / 8)
    assert (s.idtp, s.idfp, s.idfn) == (4, 4, 4) and s.idf1 == pytest.approx(0.5)
    assert s.tracks_per_object == {1: 2, 2: 2}


def test_re_entry_under_a_new_id_is_one_switch_after_absence():
    # A visible on frames 0-1 (track 1), out of the frame on 2 (empty mask), back on 3-4 as track 5.
    gt = [{1: A}, {1: A}, {1: EMPTY}, {1: A}, {1: A}]
    preds = [pred((A, 1)), pred((A, 1)), pred(), pred((A, 5)), pred((A, 5))]
    s = identity_scores(preds, gt)
    assert s.gt == 4 and s.id_switches == 1
    (switch,) = s.switches
    assert (switch.frame, switch.object_id, switch.from_track, switch.to_track) == (3, 1, 1, 5)
    assert switch.after_absence
    assert s.mota == pytest.approx(0.75)
    assert (s.idtp, s.idfp, s.idfn) == (2, 2, 2) and s.idf1 == pytest.approx(0.5)


def test_re_entry_under_the_same_id_is_no_switch():
    gt = [{1: A}, {1: EMPTY}, {1: EMPTY}, {1: A}]
    s = identity_scores([pred((A, 1)), pred(), pred(), pred((A, 1))], gt)
    assert s.gt == 2 and s.id_switches == 0 and s.idf1 == 1.0 and s.mota == 1.0


def test_a_missed_frame_does_not_reset_identity():
    # Matched to 1, missed (no prediction), then matched to 2: one switch, not after an absence.
    gt = [{1: A}] * 3
    s = identity_scores([pred((A, 1)), pred(), pred((A, 2))], gt)
    assert (s.matches, s.misses, s.id_switches) == (2, 1, 1)
    assert not s.switches[0].after_absence
    assert s.mota == pytest.approx(1 - (1 + 1) / 3)
    assert (s.idtp, s.idfn, s.idfp) == (1, 2, 1) and s.idf1 == pytest.approx(2 / 5)


def test_fragmented_track():
    # 6 frames under track 1, then 2 under track 2: IDTP 6 of 8 GT and 8 predictions.
    gt = [{1: A}] * 8
    s = identity_scores([pred((A, 1))] * 6 + [pred((A, 2))] * 2, gt)
    assert s.id_switches == 1 and s.idf1 == pytest.approx(0.75) and s.idp == s.idr == pytest.approx(0.75)


def test_iou_below_threshold_is_a_miss_and_a_false_positive():
    # The 4x4 box shifted by 2 px: IoU = 8 / 24 = 1/3 < 0.5.
    s = identity_scores([pred((box(2, 0), 1))], [{1: A}])
    assert (s.matches, s.misses, s.false_positives) == (0, 1, 1)
    assert s.mota == pytest.approx(-1.0) and s.idf1 == 0.0 and math.isnan(s.mean_iou)
    # Shifted by 1 px: IoU = 12 / 20 = 0.6, a match.
    s = identity_scores([pred((box(1, 0), 1))], [{1: A}])
    assert s.matches == 1 and s.mean_iou == pytest.approx(0.6) and s.idf1 == 1.0


def test_hungarian_takes_the_better_of_two_overlapping_predictions():
    # Both overlap A with IoU >= 0.5 (0.6 and 1.0): the exact one matches, the other is a false positive.
    s = identity_scores([pred((box(1, 0), 1), (A, 2))], [{1: A}])
    assert (s.matches, s.false_positives) == (1, 1) and s.mean_iou == pytest.approx(1.0)
    # IDF1 counts both overlaps (a tie of one frame each) but matches the object to one track only.
    assert s.idtp == 1 and s.idf1 == pytest.approx(2 / 3)


def test_untracked_predictions_are_left_out_and_counted():
    s = identity_scores([pred((A, -1), (B, 3))], [{1: A, 2: B}])
    assert s.untracked == 1 and s.predictions == 1 and s.matches == 1 and s.misses == 1


def test_empty_inputs_and_length_mismatch():
    s = identity_scores([pred()], [{1: EMPTY}])
    assert s.gt == 0 and s.idf1 == 1.0 and s.mota == 1.0
    with pytest.raises(ValueError):
        identity_scores([pred()], [])


def _random_case(rng: np.random.Generator, frames: int = 30):
    """Objects in disjoint lanes (so per-frame matching is unambiguous), ids that switch, drop and vanish."""
    objects = {o: (int(rng.integers(0, 14)), 4 * o) for o in range(1, 5)}
    gt, preds = [], []
    track = {o: o * 10 for o in objects}
    for _ in range(frames):
        truth, tracked = {}, []
        for o, (x, y) in objects.items():
            present = rng.random() > 0.1
            x = int(np.clip(x + rng.integers(-1, 2), 0, 16))
            objects[o] = (x, y)
            mask = np.zeros((H, W), bool)
            if present:
                mask[y : y + 3, x : x + 4] = True
            truth[o] = mask
            if rng.random() < 0.1:
                track[o] = int(rng.choice([t for t in range(10, 60) if t not in track.values()]))
            if present and rng.random() > 0.1:
                shift = int(rng.choice([0, 0, 0, 2]))  # sometimes off by IoU 1/3
                pm = np.zeros((H, W), bool)
                pm[y : y + 3, min(x + shift, 16) : min(x + shift, 16) + 4] = True
                tracked.append((pm, track[o]))
        if rng.random() < 0.2:
            tracked.append((box(0, 17, 3), 99))  # a stray track
        gt.append(truth)
        preds.append(pred(*tracked))
    return preds, gt


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_motmetrics(seed):
    import motmetrics as mm  # a test dependency: the reference implementation
    preds, gt = _random_case(np.random.default_rng(seed))
    acc = mm.MOTAccumulator(auto_id=True)
    for p, truth in zip(preds, gt):
        present = [o for o in truth if truth[o].any()]
        if present and len(p):
            from operators.metrics import iou_matrix

            iou = iou_matrix(np.stack([truth[o] for o in present]), p.masks)
            dist = np.where(iou >= 0.5, 1 - iou, np.nan)
        else:
            dist = np.empty((len(present), len(p)))
        acc.update(present, [int(t) for t in p.track_ids], dist)
    summary = mm.metrics.create().compute(
        acc, metrics=["num_switches", "num_misses", "num_false_positives", "mota", "idf1", "idtp"], name="x"
    )
    ours = identity_scores(preds, gt)
    assert ours.id_switches == int(summary["num_switches"].iloc[0])
    assert ours.misses == int(summary["num_misses"].iloc[0])
    assert ours.false_positives == int(summary["num_false_positives"].iloc[0])
    assert ours.idtp == int(summary["idtp"].iloc[0])
    assert ours.mota == pytest.approx(float(summary["mota"].iloc[0]))
    assert ours.idf1 == pytest.approx(float(summary["idf1"].iloc[0]))
