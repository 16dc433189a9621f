"""operators.rle: the bounding-box encoder gives pycocotools' exact bytes on every kind of mask."""

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from operators import rle


def _reference(mask: np.ndarray) -> str:
    return coco_mask.encode(np.asfortranarray(mask[:, :, None].astype(np.uint8)))[0]["counts"].decode("ascii")


def _masks(height: int, width: int, rng: np.random.Generator) -> list[np.ndarray]:
    empty = np.zeros((height, width), bool)
    full = np.ones((height, width), bool)
    corners = empty.copy()
    corners[0, 0] = corners[-1, -1] = True  # runs that start on the first pixel and end on the last
    columns = empty.copy()
    columns[:, : max(1, width // 3)] = True  # full-height columns: runs cross column boundaries
    columns[-1, -1] = True
    holed = empty.copy()
    holed[height // 4 : 3 * height // 4 + 1, width // 4 : 3 * width // 4 + 1] = True
    holed[height // 2, width // 2] = False
    noise = rng.random((height, width)) < 0.5
    sparse = rng.random((height, width)) < 0.01
    return [empty, full, corners, columns, holed, noise, sparse]


@pytest.mark.parametrize("height, width", [(1, 1), (3, 1), (1, 5), (5, 7), (24, 32), (720, 1280)])
def test_encode_matches_pycocotools_byte_for_byte_and_round_trips(height, width):
    rng = np.random.default_rng(height * 1000 + width)
    masks = np.stack(_masks(height, width, rng))
    encoded = rle.encode(masks)
    assert [e["counts"] for e in encoded] == [_reference(m) for m in masks]
    assert all(e["size"] == [height, width] for e in encoded)
    np.testing.assert_array_equal(rle.decode(encoded), masks)
    # The boxes a record already has give the same bytes (the empty mask's box is all zeros).
    from operators.records import Instances

    boxes = Instances.from_masks(masks, [1.0] * len(masks), [0] * len(masks), height, width).boxes_xyxy
    assert rle.encode(masks, boxes) == encoded


def test_run_lengths_start_with_background_and_sum_to_the_frame():
    mask = np.zeros((4, 3), bool)
    mask[0, 0] = True  # column-major: pixel 0
    mask[1:3, 2] = True  # pixels 9 and 10
    assert rle.run_lengths(mask) == [0, 1, 8, 2, 1]
    assert rle.run_lengths(np.zeros((4, 3), bool)) == [12]


def test_encode_of_no_masks_is_empty():
    assert rle.encode(np.zeros((0, 8, 8), bool)) == []
