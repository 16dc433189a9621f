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


def _annotation(path, labels, mode="P"):
    """An annotation PNG: indexed (mode P, any palette) as DAVIS's, or plain grey levels (mode L)."""
    image = Image.fromarray(np.asarray(labels, np.uint8), mode=mode)
    if mode == "P":
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)
    return path


def test_objects_spec_gives_one_mask_prompt_per_index_with_that_id(tmp_path):
    labels = np.zeros((12, 16), np.uint8)
    labels[1:4, 1:4], labels[6:9, 8:14], labels[10, 0] = 1, 3, 255  # 255 is DAVIS's void label: no object
    path = _annotation(tmp_path / "00000.png", labels)
    prompts = PromptBook.from_cli([f"objects:{path}@4"]).default
    assert [(p.prompt_id, p.track_id, p.kind, p.frame_index) for p in prompts] == [(1, 1, "mask", 4), (3, 3, "mask", 4)]
    assert prompts[0].mask.sum() == 9 and (prompts[1].mask == (labels == 3)).all()


def test_objects_in_a_prompt_file_resolve_against_its_folder(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5] = 2
    _annotation(tmp_path / "first.png", labels)
    (tmp_path / "prompts.json").write_text(json.dumps({
        "blackswan": ["objects:first.png"], "dogs": [{"type": "objects", "path": "first.png", "frame": 2}]}))
    book = PromptBook.from_cli([], tmp_path / "prompts.json")
    assert [(p.prompt_id, p.track_id) for p in book.for_video("x/blackswan")] == [(2, 2)]
    assert [p.frame_index for p in book.for_video("dogs.mp4")] == [2]


def test_objects_errors_are_named(tmp_path):
    labels = np.zeros((8, 8), np.uint8)
    labels[2:5, 2:5] = 1
    grey = _annotation(tmp_path / "grey.png", labels, mode="L")
    with pytest.raises(InvalidPromptError, match=r"grey.png is not an indexed \(palette\) PNG but mode L"):
        PromptBook.from_cli([f"objects:{grey}"])
    empty = _annotation(tmp_path / "empty.png", np.where(labels > 0, 255, 0))
    with pytest.raises(InvalidPromptError, match="empty.png has no object"):
        PromptBook.from_cli([f"objects:{empty}"])
    with pytest.raises(InvalidPromptError, match="does not exist"):
        PromptBook.from_cli([f"objects:{tmp_path / 'missing.png'}"])
    one = _annotation(tmp_path / "one.png", labels)
    # The box is the second spec, so prompt id 1, which object 1 already takes.
    with pytest.raises(InvalidPromptError, match="prompt id 1 is given twice"):
        PromptBook.from_cli([f"objects:{one}", "box:0,0,4,4"])
    assert [p.prompt_id for p in PromptBook.from_cli(["box:0,0,4,4", f"objects:{one}"]).default] == [0, 1]
    with pytest.raises(InvalidPromptError, match="one prompt per object"):
        parse_prompt(f"objects:{one}", 0)
