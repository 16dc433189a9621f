"""DAVIS J and F on hand-computed cases, and the prediction-to-ground-truth matching."""

from __future__ import annotations

import numpy as np
import pytest

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

    def test_boundary_of_square_is_its_outline(self):
        assert boundary_map(square(10, 10, 20)).sum() == 4 * 20 - 4

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
        assert boundary_measure(vertical_line(30), vertical_line(33)) == 0.0

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
