"""Annotators draw where they should, in stable per-track colours, without touching their input."""

from __future__ import annotations

import numpy as np
import pytest

from operators.annotate import (
    DAVIS_PALETTE,
    ContourAnnotator,
    LabelAnnotator,
    MaskAnnotator,
    compose,
    track_color,
    track_slots,
)
from operators.records import Instances

H, W = 80, 120


def boxes_instances(boxes, track_ids, scores=None) -> Instances:
    masks = np.zeros((len(boxes), H, W), bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    scores = scores if scores is not None else [0.8] * len(boxes)
    return Instances.from_masks(masks, scores, [3] * len(boxes), H, W).with_track_ids(track_ids)


def gradient_image() -> np.ndarray:
    ramp = np.linspace(20, 220, W, dtype=np.uint8)
    return np.stack([np.tile(ramp, (H, 1))] * 3, axis=-1)


ALL_ANNOTATORS = [
    MaskAnnotator(0.5),
    ContourAnnotator(),
    LabelAnnotator(),
    compose(MaskAnnotator(0.4), ContourAnnotator(), LabelAnnotator()),
]


@pytest.mark.parametrize("annotator", ALL_ANNOTATORS, ids=lambda a: type(a).__name__)
def test_annotators_do_not_modify_their_input_and_draw_something(annotator):
    image = gradient_image()
    before = image.copy()
    instances = boxes_instances([(30, 30, 70, 60)], [5])
    masks_before = instances.masks.copy()
    out = annotator.annotate(image, instances)
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(instances.masks, masks_before)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out != image).any()


def test_track_colour_is_stable_across_frames_and_differs_between_tracks():
    opaque = MaskAnnotator(opacity=1.0)
    first = opaque.annotate(gradient_image(), boxes_instances([(5, 5, 25, 25), (60, 40, 90, 70)], [7, 8]))
    # Next frame: the tracks have moved and swapped order.
    second = opaque.annotate(gradient_image(), boxes_instances([(70, 10, 100, 30), (20, 50, 40, 70)], [8, 7]))
    assert tuple(first[10, 10]) == tuple(second[60, 30]) == track_color(7) == tuple(DAVIS_PALETTE[7])
    assert tuple(first[50, 70]) == tuple(second[20, 80]) == track_color(8)
    assert track_color(7) != track_color(8)


def test_mask_blend_tints_only_the_mask_and_higher_score_wins_overlap():
    image = np.full((H, W, 3), 100, np.uint8)
    instances = boxes_instances([(10, 10, 50, 50), (30, 30, 70, 70)], [1, 2], scores=[0.9, 0.3])
    out = MaskAnnotator(0.5).annotate(image, instances).astype(int)
    assert np.abs(out[20, 20] - (114, 50, 50)).max() <= 1  # (128, 0, 0) half over grey 100
    assert np.abs(out[40, 40] - (114, 50, 50)).max() <= 1  # overlap: track 1 (0.9) on top
    assert np.abs(out[60, 60] - (50, 114, 50)).max() <= 1  # track 2 alone, (0, 128, 0)
    outside = np.ones((H, W), bool)
    outside[10:70, 10:70] = False
    assert (out[outside] == 100).all()


def test_contour_draws_the_boundary_not_the_interior():
    image = np.zeros((H, W, 3), np.uint8)
    out = ContourAnnotator(thickness=1).annotate(image, boxes_instances([(20, 20, 60, 60)], [2]))
    assert tuple(out[20, 40]) == tuple(out[59, 40]) == track_color(2)
    assert not out[40, 40].any() and not out[5, 5].any()


def test_label_sits_above_the_object_or_inside_it_at_the_top_edge():
    image = np.zeros((H, W, 3), np.uint8)
    out = LabelAnnotator().annotate(image, boxes_instances([(10, 40, 60, 70)], [4]))
    changed_rows = np.flatnonzero((out != 0).any(axis=(1, 2)))
    assert changed_rows.max() == 39 and changed_rows.min() >= 40 - 30  # a text-high box ending above row 40
    at_top = LabelAnnotator().annotate(image, boxes_instances([(10, 0, 60, 30)], [4]))
    assert np.flatnonzero((at_top != 0).any(axis=(1, 2))).min() == 0


def test_track_slots_wrap_large_ids_and_leave_unassociated_as_background():
    assert track_slots(np.array([1, 254, 255, 300, 508, 509, 0, -1])).tolist() == [1, 254, 1, 46, 254, 1, 0, 0]
    assert track_color(-1) == (224, 224, 192)  # the void colour


def test_compose_needs_an_annotator_and_mask_opacity_is_checked():
    with pytest.raises(ValueError):
        compose()
    with pytest.raises(ValueError, match="opacity 1.5"):
        MaskAnnotator(1.5)
