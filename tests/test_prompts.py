import json
import re

import numpy as np
import pytest
from PIL import Image

from operators.errors import InvalidPromptError
from pipeline.prompts import PromptBook, parse_prompt


def test_point_box_and_frame_suffix():
    point = parse_prompt("point:10,20;30.5,40", 0)
    assert point.kind == "point" and point.points == ((10.0, 20.0), (30.5, 40.0)) and point.frame_index == 0
    box = parse_prompt("box:1,2,30,40@15", 3)
    assert box.prompt_id == 3 and box.box == (1.0, 2.0, 30.0, 40.0) and box.frame_index == 15


def test_scribble_png_any_nonzero_pixel_is_prompt(tmp_path):
    pixels = np.zeros((20, 30), np.uint8)
    pixels[5, 7] = 1  # a faint pixel still counts, as in X-SAM
    pixels[10:12, 3:9] = 255
    Image.fromarray(pixels).save(tmp_path / "s.png")
    prompt = parse_prompt(f"scribble:{tmp_path / 's.png'}", 0)
    assert prompt.mask.shape == (20, 30) and prompt.mask.sum() == 13


@pytest.mark.parametrize(
    "spec, message",
    [
        ("point:10", "a point is x,y"),
        ("box:1,2,3", "a box is x0,y0,x1,y1"),
        ("box:5,5,1,1", "x1<=x0"),
        ("circle:1,2", "unknown prompt type"),
        ("point 1,2", "KIND:VALUE"),
        ("mask:/nonexistent/m.png", "does not exist"),
        ("point:1,2@x", "frame after @"),
    ],
)
def test_bad_specs_name_the_reason(spec, message):
    with pytest.raises(InvalidPromptError, match=message):
        parse_prompt(spec, 0)


def test_empty_mask_is_refused(tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "empty.png")
    with pytest.raises(InvalidPromptError, match="no nonzero pixel"):
        parse_prompt(f"mask:{tmp_path / 'empty.png'}", 0)


def test_prompt_file_per_video_with_wildcard_and_relative_png(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 2:5] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    (tmp_path / "prompts.json").write_text(json.dumps({
        "*": ["point:1,1"],
        "cars.mp4": [{"type": "box", "box": [0, 0, 5, 5], "frame": 3}, {"type": "mask", "path": "m.png"}],
        "walk": [{"type": "point", "points": [4, 5]}],
    }))
    book = PromptBook.from_cli([], tmp_path / "prompts.json")
    cars = book.for_video("/data/cars.mp4")
    assert [p.kind for p in cars] == ["box", "mask"] and cars[0].frame_index == 3 and cars[1].mask.sum() == 9
    assert book.for_video("/x/walk.avi")[0].points == ((4.0, 5.0),)
    assert book.for_video("/x/other.mkv")[0].points == ((1.0, 1.0),)
    assert book.unused_keys(["/data/cars.mp4"]) == ["walk"]


def test_prompt_file_errors(tmp_path):
    with pytest.raises(InvalidPromptError, match="does not exist"):
        PromptBook.from_cli([], tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not: json: [")
    with pytest.raises(InvalidPromptError, match="not valid YAML/JSON"):
        PromptBook.from_cli([], tmp_path / "bad.json")
    (tmp_path / "nobox.json").write_text(json.dumps({"a.mp4": [{"type": "box"}]}))
    with pytest.raises(InvalidPromptError, match="needs 'box'"):
        PromptBook.from_cli([], tmp_path / "nobox.json")


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"type": "box", "box": [1, "a", 3, 4]}, "expected comma-separated numbers, got '1,a,3,4'"),
        ({"type": "box", "box": [1, 2, 3, 4], "frame": "x"}, "prompt 0: 'frame' must be an integer, got 'x'"),
        ({"type": "point", "points": 5}, "prompt 0: points are [x, y]"),
    ],
)
def test_prompt_file_values_of_the_wrong_kind_are_named(tmp_path, entry, message):
    (tmp_path / "p.json").write_text(json.dumps({"a.mp4": [entry]}))
    with pytest.raises(InvalidPromptError, match=re.escape(message)):
        PromptBook.from_cli([], tmp_path / "p.json")


def test_prompt_file_points_take_every_spelling(tmp_path):
    points = {"1,2": ((1.0, 2.0),), "1,2;3,4": ((1.0, 2.0), (3.0, 4.0)), (1, 2): ((1.0, 2.0),),
              ((1, 2), (3, 4)): ((1.0, 2.0), (3.0, 4.0))}
    for given, expected in points.items():
        (tmp_path / "p.json").write_text(json.dumps({"a.mp4": [{"type": "point", "points": given}]}))
        assert PromptBook.from_cli([], tmp_path / "p.json").for_video("a.mp4")[0].points == expected, given
