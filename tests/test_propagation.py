"""Optical-flow mask propagation: accuracy on known motion, ids kept, confidence falls when objects hide."""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from bench.clips import ClipSpec, Scene, decode_frames, make_clip
from operators.metrics import region_similarity
from operators.propagation import FlowPropagator
from operators.records import Instances


def textured(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return np.clip((noise - noise.mean()) * 3 + 128, 0, 255).astype(np.uint8)


def moving_square(size=(240, 320), start=(100, 80), shift=(3, 2), side=60, seed=0):
    """Two frames: a textured square moved by ``shift`` over a static textured background."""
    rng = np.random.default_rng(seed)
    h, w = size
    background, patch = textured(rng, h, w), textured(rng, side, side)
    frames, masks = [], []
    for dx, dy in ((0, 0), shift):
        frame, mask = background.copy(), np.zeros(size, bool)
        x, y = start[0] + dx, start[1] + dy
        frame[y : y + side, x : x + side] = patch
        mask[y : y + side, x : x + side] = True
        frames.append(frame)
        masks.append(mask)
    return frames, masks


def one(mask: np.ndarray, score: float = 0.9) -> Instances:
    found = Instances.from_masks([mask], [score], [4], *mask.shape, embeddings=np.ones((1, 3)))
    return found.with_track_ids([11])


def test_warp_follows_a_translation_and_keeps_identity():
    (prev, cur), (mask_prev, mask_cur) = moving_square()
    propagator = FlowPropagator()
    moved = propagator.warp(one(mask_prev), propagator.flow(prev, cur))
    assert moved.masks.dtype == bool and moved.masks.shape == (1, 240, 320)
    assert region_similarity(moved.masks[0], mask_cur) > 0.95
    assert moved.track_ids.tolist() == [11] and moved.prompt_ids.tolist() == [4]
    np.testing.assert_array_equal(moved.embeddings, np.ones((1, 3)))
    assert 0.8 < moved.scores[0] <= 0.9


def test_grayscale_frames_give_the_rgb_flow():
    (prev, cur), _ = moving_square()
    propagator = FlowPropagator()
    from_rgb = propagator.flow(prev, cur)
    from_gray = propagator.flow(cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY), cv2.cvtColor(cur, cv2.COLOR_RGB2GRAY))
    np.testing.assert_allclose(from_rgb.backward, from_gray.backward)


def test_large_frames_get_flow_at_reduced_resolution_and_masks_at_full():
    (prev, cur), (mask_prev, mask_cur) = moving_square(size=(480, 640), start=(200, 160), shift=(6, 4), side=120)
    propagator = FlowPropagator(max_side=320)
    flow = propagator.flow(prev, cur)
    assert flow.backward.shape == (240, 320, 2) and flow.frame_size == (480, 640)
    moved = propagator.warp(one(mask_prev), flow)
    assert moved.masks.shape == (1, 480, 640)
    assert region_similarity(moved.masks[0], mask_cur) > 0.95


@pytest.mark.parametrize("height, width", [(8, 12), (12, 8), (8, 45), (45, 8), (12, 200), (90, 4000)])
def test_thin_and_tiny_frames_down_to_dis_minimum_get_flow(height, width):
    """Issue 14 item 8: a 45x8 frame raised inside DIS (its finest pyramid level above the coarsest), a 4000x90
    one was downscaled to 320x7, below DIS's minimum."""
    rng = np.random.default_rng(3)
    prev, cur = (rng.integers(0, 256, (height, width), dtype=np.uint8) for _ in range(2))
    propagator = FlowPropagator()
    assert propagator.too_small(height, width) is None
    flow = propagator.flow(prev, cur)
    assert flow.frame_size == (height, width) and min(flow.backward.shape[:2]) >= 8
    assert propagator.warp(one(np.ones((height, width), bool)), flow).masks.shape == (1, height, width)


def test_frames_below_dis_minimum_are_named():
    assert FlowPropagator.too_small(8, 11) == ("frame 11x8 is smaller than the minimum 12x8 (optical flow needs 8 "
                                               "pixels on the shorter side and 12 on the longer)")
    assert "frame 7x100 is smaller than the minimum 8x12" in FlowPropagator.too_small(100, 7)
    assert "frame 1x1 is smaller" in FlowPropagator.too_small(1, 1)


def test_masks_do_not_bleed_into_the_background_over_many_frames(tmp_path):
    """Ten frames of propagation on compressed video stay close to the truth in area and overlap."""
    clip = make_clip(ClipSpec(seed=2, num_frames=11, speed=2.0), tmp_path / "walk.mp4")
    frames = decode_frames(clip.path)
    propagator = FlowPropagator()
    tracked = one(clip.masks[0][1])
    for t in range(1, 11):
        tracked = propagator.warp(tracked, propagator.flow(frames[t - 1], frames[t]))
    truth = clip.masks[10][1]
    assert region_similarity(tracked.masks[0], truth) > 0.85
    assert tracked.masks[0].sum() / truth.sum() == pytest.approx(1.0, abs=0.1)


def test_an_object_going_under_an_occluder_loses_confidence():
    scene = Scene(ClipSpec(seed=3, occlusion=True))
    frames = [scene.render(t) for t in range(18, 31)]  # object 1 slides under the pole
    propagator = FlowPropagator()
    both = Instances.from_masks([frames[0].masks[1], frames[0].masks[2]], [1.0, 1.0], [0, 0], 240, 320)
    for before, after in zip(frames, frames[1:]):
        both = propagator.warp(both, propagator.flow(before.rgb, after.rgb))
    occluded, visible = both.scores
    assert occluded < visible - 0.1, both.scores


def test_a_mask_that_leaves_the_frame_scores_zero():
    (prev, cur), _ = moving_square(shift=(12, 0))
    off_frame = Instances.from_masks([np.zeros((240, 320), bool)], [0.9], [0], 240, 320)
    off_frame.masks[0, :, :4] = True
    propagator = FlowPropagator()
    flow = propagator.flow(prev, cur)
    flow.backward[...] = (20.0, 0.0)  # everything moved 20 px left: the strip on the left edge is gone
    moved = propagator.warp(off_frame, flow)
    assert not moved.masks.any() and moved.scores[0] == 0.0


def test_empty_instances_and_size_mismatch():
    (prev, cur), _ = moving_square()
    propagator = FlowPropagator()
    flow = propagator.flow(prev, cur)
    assert len(propagator.warp(Instances.empty(240, 320), flow)) == 0
    with pytest.raises(ValueError):
        propagator.warp(Instances.empty(120, 160), flow)
    with pytest.raises(ValueError):
        propagator.flow(prev, cur[:120])
    with pytest.raises(ValueError):
        FlowPropagator(preset="glacial")


def test_a_clean_translation_keeps_its_score():
    noise = (np.random.default_rng(0).random((120, 160, 3)) * 255).astype(np.uint8)
    frame = cv2.GaussianBlur(noise, (0, 0), 2)  # textured like a real surface, not per-pixel noise
    moved = np.roll(frame, 3, axis=1)
    mask = np.zeros((1, 120, 160), bool)
    mask[0, 40:80, 50:90] = True
    instances = Instances.from_masks(mask, [1.0], [0], 120, 160)
    propagator = FlowPropagator()
    warped = propagator.warp(instances, propagator.flow(frame, moved))
    assert warped.scores[0] > 0.9  # every pixel's flow is photometrically consistent


@pytest.mark.parametrize("kind, expected", [("red_blob", "measured"), ("blue_tile", "guessed")])
def test_flow_support_tells_a_noise_textured_object_from_a_striped_one(tmp_path, kind, expected):
    """Stripes leave motion along them unmeasured (the aperture problem): little of the mask is supported."""
    clip = make_clip(ClipSpec(seed=3, num_frames=2, kinds=(kind,), instances_per_kind=1), tmp_path / f"{kind}.mp4")
    frames = decode_frames(clip.path)
    propagator = FlowPropagator()
    flow = propagator.flow(frames[0], frames[1])
    tracked = propagator.warp(one(clip.masks[0][1]), flow)
    support = propagator.flow_support(tracked, flow)
    assert support.shape == (1,)
    if expected == "measured":
        assert support[0] > 0.6
    else:
        assert support[0] < 0.3
    assert propagator.flow_support(Instances.empty(*frames[0].shape[:2]), flow).shape == (0,)


def bilinear(field: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``field`` sampled at rows ``ys`` x columns ``xs`` (working pixels), edges replicated, in float64."""
    height, width = field.shape[:2]
    ys, xs = np.clip(ys, 0, height - 1), np.clip(xs, 0, width - 1)
    y0, x0 = np.minimum(ys.astype(int), height - 2), np.minimum(xs.astype(int), width - 2)
    wy, wx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    f = field.astype(np.float64)
    top = (1 - wx) * f[y0][:, x0] + wx * f[y0][:, x0 + 1]
    bottom = (1 - wx) * f[y0 + 1][:, x0] + wx * f[y0 + 1][:, x0 + 1]
    return (1 - wy) * top + wy * bottom


@pytest.mark.parametrize("frame, working, tolerance", [
    ((720, 1280), (180, 320), 1e-3), ((1080, 1920), (180, 320), 1e-3), ((150, 200), (150, 200), 1e-3),
    # Not a whole multiple: OpenCV's remap places each sample to 1/32 pixel (here up to 0.19 on a rough field).
    ((750, 1000), (240, 320), 0.25),
])
def test_flow_is_upsampled_inside_a_window_as_sampling_every_pixel_centre(frame, working, tolerance):
    """A window's full-resolution flow is the working flow sampled at each pixel's centre, as a whole-frame
    resize gives it, at the frame's edges too."""
    from operators.propagation import _upsample

    rng = np.random.default_rng(1)
    (height, width), (fh, fw) = frame, working
    field = (rng.random((fh, fw, 2), np.float32) - 0.5) * 8
    scale = np.array([width / fw, height / fh], np.float32)
    for _ in range(50):
        r0, c0 = int(rng.integers(0, height - 1)), int(rng.integers(0, width - 1))
        rows, cols = slice(r0, int(rng.integers(r0 + 1, height + 1))), slice(c0, int(rng.integers(c0 + 1, width + 1)))
        ys = (np.arange(rows.start, rows.stop) + 0.5) / scale[1] - 0.5
        xs = (np.arange(cols.start, cols.stop) + 0.5) / scale[0] - 0.5
        got = _upsample(field, (rows, cols), scale, cv2.INTER_LINEAR)
        assert got.shape == (rows.stop - rows.start, cols.stop - cols.start, 2)
        assert np.abs(got - bilinear(field, ys, xs)).max() < tolerance
