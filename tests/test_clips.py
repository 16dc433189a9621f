"""The synthetic clip generator: deterministic, textured, real H.264, ground truth that matches the pixels."""

from __future__ import annotations

import av
import numpy as np
import pytest

from bench.clips import ClipSpec, RenderedFrame, Scene, decode_frames, make_clip


def rendered(spec: ClipSpec) -> list[RenderedFrame]:
    scene = Scene(spec)
    return [scene.render(t) for t in range(spec.num_frames)]


@pytest.fixture(scope="module")
def occluded_clip(tmp_path_factory):
    spec = ClipSpec(seed=3, occlusion=True, kinds=("red_blob", "blue_tile"))
    return make_clip(spec, tmp_path_factory.mktemp("clips") / "occluded.mp4")


def test_same_seed_same_pixels_other_seed_other_pixels():
    first, again, other = (rendered(ClipSpec(seed=s, num_frames=5)) for s in (4, 4, 5))
    for a, b in zip(first, again):
        assert (a.rgb == b.rgb).all()
        assert all((a.masks[o] == b.masks[o]).all() for o in a.masks)
    assert not (first[0].rgb == other[0].rgb).all()


def test_writes_decodable_h264_with_the_spec_size_and_length(occluded_clip):
    with av.open(str(occluded_clip.path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    frames = decode_frames(occluded_clip.path)
    assert len(frames) == occluded_clip.num_frames == 60
    assert frames[0].shape == (240, 320, 3) and occluded_clip.size == (320, 240)


def test_decoded_pixels_match_the_ground_truth_objects(occluded_clip):
    frames = decode_frames(occluded_clip.path)
    for t in (0, 30, 59):
        for object_id, kind in occluded_clip.kinds.items():
            mask = occluded_clip.masks[t][object_id]
            colour = frames[t][mask].mean(axis=0)
            # Red objects are red and blue ones blue in the decoded video, where the masks say.
            assert np.argmax(colour) == (0 if kind == "red_blob" else 2), (t, object_id, colour)


def test_two_instances_per_kind_with_disjoint_visible_masks(occluded_clip):
    assert sorted(occluded_clip.kinds.values()) == ["blue_tile", "blue_tile", "red_blob", "red_blob"]
    for masks in occluded_clip.masks:
        stacked = np.stack(list(masks.values()))
        assert stacked.dtype == bool and stacked.shape == (4, 240, 320)
        assert stacked.sum(axis=0).max() <= 1


def test_objects_and_background_are_textured_not_flat():
    frame = rendered(ClipSpec(seed=2, num_frames=2))[0]
    for mask in frame.masks.values():
        assert frame.rgb[mask].std(axis=0).max() > 8
    background = ~np.any(list(frame.masks.values()), axis=0)
    assert frame.rgb[background].std(axis=0).min() > 8


def test_occluder_hides_part_of_the_first_object_half_way(occluded_clip):
    visible = np.array([v[1] for v in occluded_clip.visible_fraction])
    assert visible[0] == pytest.approx(1.0)
    assert 0.1 < visible.min() < 0.7
    assert 15 <= int(np.argmin(visible)) <= 45


def test_without_occlusion_objects_stay_fully_visible():
    frames = rendered(ClipSpec(seed=6, num_frames=30))
    assert min(min(f.visible_fraction.values()) for f in frames) > 0.97


def test_scale_change_grows_objects():
    frames = rendered(ClipSpec(seed=1, num_frames=20, scale_change=1.5))
    first, last = frames[0].masks[1].sum(), frames[-1].masks[1].sum()
    assert last / first == pytest.approx(1.5**2, rel=0.1)


def test_objects_move():
    frames = rendered(ClipSpec(seed=1, num_frames=20, speed=2.0))
    assert (frames[0].masks[1] != frames[-1].masks[1]).sum() > 200


def test_suggested_prompts_sit_on_the_first_instance(occluded_clip):
    exemplar = occluded_clip.masks[0][occluded_clip.object_ids("red_blob")[0]]
    point = occluded_clip.suggested_prompt("red_blob", "point", prompt_id=3)
    assert point.prompt_id == 3 and point.frame_index == 0
    x, y = point.points[0]
    assert exemplar[int(y), int(x)]
    box = occluded_clip.suggested_prompt("red_blob", "box")
    inside = box.to_mask(240, 320)
    assert inside[exemplar].all() and inside.sum() < 2 * exemplar.sum()


@pytest.mark.parametrize(
    "bad", [dict(width=321), dict(kinds=("purple_cow",)), dict(num_frames=1), dict(instances_per_kind=0)]
)
def test_invalid_specs_are_rejected(bad):
    with pytest.raises(ValueError):
        ClipSpec(**bad)
