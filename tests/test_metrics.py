"""DAVIS J and F on hand-computed cases, against the reference's definitions, and the prediction-to-ground-truth
matching."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from operators.metrics import (
    ObjectScores,
    assign_by_track,
    assign_per_frame,
    boundary_map,
    boundary_measure,
    boundary_tolerance,
    evaluate_clip,
    hungarian_match,
    iou_matrix,
    jf_mean,
    object_scores,
    region_similarity,
    statistics,
)
from operators.records import Instances


def square(x0: int, y0: int, side: int, size: tuple[int, int] = (100, 100)) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


def vertical_line(x: int, size: tuple[int, int] = (100, 100)) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[20:70, x] = True
    return mask


def instances(masks: list[np.ndarray], track_ids: list[int] | None = None) -> Instances:
    found = Instances.from_masks(masks, [1.0] * len(masks), [0] * len(masks), 100, 100)
    return found if track_ids is None else found.with_track_ids(track_ids)


EMPTY = np.zeros((100, 100), bool)


class TestRegionSimilarity:
    def test_square_shifted_by_two_pixels(self):
        # 10x10 squares 2 px apart overlap in 8x10 = 80 px; union 120 px.
        assert region_similarity(square(10, 10, 10), square(12, 10, 10)) == pytest.approx(80 / 120)

    def test_identical_and_disjoint(self):
        assert region_similarity(square(10, 10, 10), square(10, 10, 10)) == 1.0
        assert region_similarity(square(10, 10, 10), square(50, 50, 10)) == 0.0

    def test_empty_masks(self):
        assert region_similarity(EMPTY, EMPTY) == 1.0
        assert region_similarity(EMPTY, square(10, 10, 10)) == 0.0


class TestBoundary:
    def test_tolerance_is_ceil_of_fraction_of_diagonal(self):
        assert boundary_tolerance(100, 100) == 2  # 0.008 * 141.4 = 1.13
        assert boundary_tolerance(480, 640) == 7  # 0.008 * 800 = 6.4
        assert boundary_tolerance(100, 100, bound_th=3) == 3  # >= 1 means pixels

    def test_boundary_of_square_is_half_a_pixel_towards_the_origin(self):
        # The square's right column and bottom row (20 + 19 px) and, outside it, the column to its left and
        # the row above it (21 + 20 px): the pixels whose right, lower or lower-right neighbour differs.
        edge = boundary_map(square(10, 10, 20))
        assert edge.sum() == 80
        assert edge[9, 9] and edge[29, 29] and edge[10:30, 9].all() and not edge[30, 10:30].any()

    def test_frame_edge_is_not_a_contour(self):
        left_half = np.zeros((100, 100), bool)
        left_half[:, :50] = True
        edge = boundary_map(left_half)
        assert edge.sum() == 100 and edge[:, 49].all()

    def test_identical_masks(self):
        assert boundary_measure(square(10, 10, 20), square(10, 10, 20)) == 1.0

    def test_shift_within_tolerance_is_perfect(self):
        assert boundary_measure(vertical_line(30), vertical_line(32)) == 1.0

    def test_shift_beyond_tolerance_scores_zero(self):
        # A line's boundary is the line and the column left of it: 30 and 29 against 34 and 33, 3 px apart.
        assert boundary_measure(vertical_line(30), vertical_line(34)) == 0.0

    def test_shift_half_within_tolerance(self):
        # Columns 29, 30 against 32, 33: 30 and 32 match (2 px), 29 and 33 do not; P = R = 0.5.
        assert boundary_measure(vertical_line(30), vertical_line(33)) == pytest.approx(0.5)

    def test_extra_object_halves_precision(self):
        # Precision 76/152 = 0.5, recall 1: F = 2 * 0.5 / 1.5.
        predicted = square(10, 10, 20) | square(60, 60, 20)
        assert boundary_measure(predicted, square(10, 10, 20)) == pytest.approx(2 / 3)
        assert region_similarity(predicted, square(10, 10, 20)) == pytest.approx(0.5)

    def test_empty_masks(self):
        assert boundary_measure(EMPTY, EMPTY) == 1.0
        assert boundary_measure(EMPTY, square(10, 10, 20)) == 0.0
        assert boundary_measure(square(10, 10, 20), EMPTY) == 0.0


class TestSequences:
    def test_object_scores_per_frame(self):
        scores = object_scores([square(10, 10, 10), EMPTY], [square(12, 10, 10), EMPTY])
        np.testing.assert_allclose(scores.j, [80 / 120, 1.0])
        assert scores.f[1] == 1.0

    def test_object_scores_need_equal_lengths(self):
        with pytest.raises(ValueError):
            object_scores([EMPTY], [EMPTY, EMPTY])

    def test_jf_mean_averages_per_object_first(self):
        a = ObjectScores(j=np.array([1.0, 0.5]), f=np.array([1.0, 1.0]))  # J 0.75, F 1
        b = ObjectScores(j=np.array([0.25]), f=np.array([0.5]))  # J 0.25, F 0.5
        assert jf_mean([a, b]) == pytest.approx((0.5 + 0.75) / 2)

    def test_jf_mean_needs_objects(self):
        with pytest.raises(ValueError):
            jf_mean([])


class TestMatching:
    def test_iou_matrix(self):
        ious = iou_matrix(np.stack([square(10, 10, 10), square(60, 60, 10)]), np.stack([square(12, 10, 10)]))
        np.testing.assert_allclose(ious, [[80 / 120], [0.0]])

    def test_iou_matrix_equals_counting_every_pixel(self):
        rng = np.random.default_rng(3)
        for _ in range(100):
            h, w = rng.integers(1, 40, 2)
            pred = rng.random((rng.integers(0, 4), h, w)) < rng.random()
            truth = rng.random((rng.integers(0, 4), h, w)) < rng.random()
            inter = (pred[:, None] & truth[None]).sum(axis=(2, 3))
            union = (pred[:, None] | truth[None]).sum(axis=(2, 3))
            expected = np.divide(inter, union, out=np.zeros(inter.shape), where=union > 0)
            np.testing.assert_allclose(iou_matrix(pred, truth), expected, rtol=1e-6)

    def test_hungarian_maximises_total_and_drops_zero_pairs(self):
        assert sorted(hungarian_match(np.array([[0.1, 0.9], [0.8, 0.2]]))) == [(0, 1), (1, 0)]
        assert hungarian_match(np.array([[0.0, 0.0], [0.0, 0.7]])) == [(1, 1)]
        assert hungarian_match(np.zeros((0, 2))) == []

    def test_per_frame_matching_ignores_order_and_extras(self):
        a, b = square(10, 10, 20), square(60, 60, 20)
        frames = assign_per_frame([instances([square(0, 70, 10), b, a])], [{1: a, 2: b}])
        assert (frames[0][1] == a).all() and (frames[0][2] == b).all()

    def test_per_frame_matching_leaves_missed_objects_empty(self):
        a, b = square(10, 10, 20), square(60, 60, 20)
        frames = assign_per_frame([instances([a])], [{1: a, 2: b}])
        assert not frames[0][2].any()

    def test_track_matching_keeps_one_track_per_object(self):
        a, b = square(10, 10, 20), square(60, 60, 20)
        truth = [{1: a, 2: b}] * 3
        # Frame 2 swaps the identities: right per frame, wrong for a tracker.
        predictions = [instances([a, b], [7, 8]), instances([a, b], [7, 8]), instances([a, b], [8, 7])]
        by_track = evaluate_clip(predictions, truth, matching="track")
        by_frame = evaluate_clip(predictions, truth, matching="frame")
        np.testing.assert_allclose(by_track.objects[1].j, [1, 1, 0])
        assert by_frame.jf_mean == 1.0

    def test_untracked_predictions_do_not_count_for_tracks(self):
        a = square(10, 10, 20)
        frames = assign_by_track([instances([a])], [{1: a}])
        assert not frames[0][1].any()

    def test_perfect_clip(self):
        a, b = square(10, 10, 20), square(60, 60, 20)
        scores = evaluate_clip([instances([b, a])] * 4, [{1: a, 2: b}] * 4)
        assert scores.jf_mean == scores.j_mean == scores.f_mean == 1.0
        assert sorted(scores.objects) == [1, 2]


# -- the davis2017-evaluation definitions, written out independently as the oracle -----------------------------
# (davis2017/metrics.py: db_eval_iou, f_measure, _seg2bmap; davis2017/utils.py: db_statistics). The reference
# itself no longer imports on NumPy 2 (np.bool) and ships on no package index, so its formulas are restated here
# in another form: per-pixel loops for the boundary map, a Euclidean distance transform for the disk dilation.


def reference_iou(gt: np.ndarray, pred: np.ndarray) -> float:
    union = np.sum(gt | pred)
    return 1.0 if union == 0 else np.sum(gt & pred) / union


def reference_seg2bmap(seg: np.ndarray) -> np.ndarray:
    """A pixel is boundary when any of its east, south and south-east neighbours inside the frame differs."""
    h, w = seg.shape
    bmap = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            for dy, dx in ((0, 1), (1, 0), (1, 1)):
                if y + dy < h and x + dx < w and seg[y, x] != seg[y + dy, x + dx]:
                    bmap[y, x] = True
    return bmap


def reference_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    radius = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(*pred.shape))
    pred_b, gt_b = reference_seg2bmap(pred), reference_seg2bmap(gt)
    n_pred, n_gt = pred_b.sum(), gt_b.sum()
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        # Dilating by disk(r) = {x² + y² <= r²} keeps the pixels within Euclidean distance r of a boundary pixel.
        near_gt = ndimage.distance_transform_edt(~gt_b) <= radius
        near_pred = ndimage.distance_transform_edt(~pred_b) <= radius
        precision, recall = np.sum(pred_b & near_gt) / n_pred, np.sum(gt_b & near_pred) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def reference_statistics(values: np.ndarray) -> tuple[float, float, float]:
    mean, recall = np.nanmean(values), np.nanmean(values > 0.5)
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    return mean, recall, np.nanmean(bins[0]) - np.nanmean(bins[3])


def random_masks(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Noise, blobs (smoothed noise) or a blob and its shifted, eroded or dilated copy."""
    style = rng.integers(3)
    if style == 0:
        return rng.random(shape) < rng.random(), rng.random(shape) < rng.random()
    blob = ndimage.gaussian_filter(rng.random(shape), rng.uniform(1, 4)) > rng.uniform(0.45, 0.55)
    if style == 1:
        return blob, ndimage.gaussian_filter(rng.random(shape), 2) > 0.5
    moved = np.roll(blob, tuple(rng.integers(-4, 5, 2)), axis=(0, 1))
    moved = [ndimage.binary_erosion, ndimage.binary_dilation, lambda m: m][rng.integers(3)](moved)
    return blob, moved


class TestAgainstDavisReference:
    def test_random_masks(self):
        rng = np.random.default_rng(16)
        for _ in range(300):
            shape = (int(rng.integers(1, 48)), int(rng.integers(1, 64)))
            pred, gt = random_masks(rng, shape)
            bound_th = [0.008, 0.02, 3][rng.integers(3)]
            np.testing.assert_array_equal(boundary_map(gt), reference_seg2bmap(gt))
            assert region_similarity(pred, gt) == pytest.approx(reference_iou(gt, pred), abs=1e-6)
            assert boundary_measure(pred, gt, bound_th) == pytest.approx(
                reference_f_measure(pred, gt, bound_th), abs=1e-6)

    def test_masks_in_part_of_the_frame(self):
        # F is counted around the masks only: objects anywhere in a larger frame, its edges included, score as
        # the reference scores them on the whole frame.
        rng = np.random.default_rng(18)
        for _ in range(150):
            shape = (int(rng.integers(4, 40)), int(rng.integers(4, 56)))
            pred, gt = np.zeros(shape, bool), np.zeros(shape, bool)
            for mask in (pred, gt):
                if rng.random() < 0.9:
                    h, w = int(rng.integers(1, shape[0] + 1)), int(rng.integers(1, shape[1] + 1))
                    y, x = int(rng.integers(0, shape[0] - h + 1)), int(rng.integers(0, shape[1] - w + 1))
                    mask[y : y + h, x : x + w] = random_masks(rng, (h, w))[0]
            bound_th = [0.008, 0.05, 2][rng.integers(3)]
            assert boundary_measure(pred, gt, bound_th) == pytest.approx(
                reference_f_measure(pred, gt, bound_th), abs=1e-6)

    def test_hand_made_masks(self):
        ring = square(20, 20, 40) & ~square(30, 30, 20)
        corner = np.zeros((100, 100), bool)
        corner[90:, 90:] = True
        full = np.ones((100, 100), bool)
        diagonal = np.eye(100, dtype=bool)
        cases = [
            (square(10, 10, 20), square(10, 10, 20)), (square(10, 10, 20), square(13, 11, 20)),
            (vertical_line(30), vertical_line(33)), (ring, square(20, 20, 40)), (corner, full),
            (full, full), (EMPTY, full), (diagonal, np.fliplr(diagonal)), (EMPTY, EMPTY),
            (square(0, 0, 1), square(99, 99, 1)), (square(10, 10, 20) | square(60, 60, 20), square(10, 10, 20)),
        ]
        for pred, gt in cases:
            assert region_similarity(pred, gt) == pytest.approx(reference_iou(gt, pred), abs=1e-6)
            assert boundary_measure(pred, gt) == pytest.approx(reference_f_measure(pred, gt), abs=1e-6)
        # 640x480 (DAVIS's 480p frames): the tolerance is ceil(6.4) = 7 px.
        big_pred, big_gt = np.zeros((480, 640), bool), np.zeros((480, 640), bool)
        big_pred[100:300, 200:400], big_gt[105:300, 207:410] = True, True
        assert boundary_measure(big_pred, big_gt) == pytest.approx(reference_f_measure(big_pred, big_gt), abs=1e-6)

    def test_statistics(self):
        rng = np.random.default_rng(17)
        lengths = list(range(1, 40)) + [68, 103, 254, 255, 256]
        for n in lengths:
            values = rng.random(n)
            ours = statistics(values)
            assert (ours.mean, ours.recall, ours.decay) == pytest.approx(reference_statistics(values), abs=1e-6)

    def test_statistics_by_hand(self):
        # 9 frames: quarters are frames 0-2 and 6-8 (cut at 1, 3, 5, 7, 9), so decay = 1 - 0.
        ours = statistics([1, 1, 1, 0.6, 0.6, 0.6, 0, 0, 0])
        assert (ours.mean, ours.recall, ours.decay) == pytest.approx((4.8 / 9, 6 / 9, 1.0))
        assert statistics([0.7]).decay == 0.0
        with pytest.raises(ValueError):
            statistics([])
