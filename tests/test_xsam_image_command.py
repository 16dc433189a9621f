"""``xsam-pipeline image`` on the tiny checkpoint: outputs on disk, and errors that name the file and the reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from operators import rle
from pipeline.cli import main


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from xsam.testing_utils import make_tiny_checkpoint

    root = tmp_path_factory.mktemp("image-command")
    checkpoint = make_tiny_checkpoint(root / "tiny")
    image = root / "street.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(image)
    scribble = np.zeros((64, 96), np.uint8)
    scribble[20:24, 10:60] = 255
    Image.fromarray(scribble).save(root / "scribble.png")
    return root, checkpoint, image


def test_vgd_writes_masks_overlay_and_json(workspace):
    root, checkpoint, image = workspace
    out = root / "vgd"
    status = main(
        [
            "image",
            str(image),
            "--checkpoint",
            str(checkpoint),
            "--prompt",
            "point:20,30",
            "--prompt",
            "box:40,10,90,60",
            "--prompt",
            f"scribble:{root / 'scribble.png'}",
            "--threshold",
            "0.1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert status == 0
    report = json.loads((out / "street.json").read_text())
    assert report["task"] == "vgd" and (report["height"], report["width"]) == (64, 96)
    objects = report["objects"]
    assert objects and {o["label"] for o in objects} <= {0, 1, 2}
    masks = rle.decode([o["rle"] for o in objects])
    assert [int(m.sum()) for m in masks] == [o["area"] for o in objects]
    label_map = Image.open(out / "street_masks.png")
    assert label_map.mode == "P" and label_map.size == (96, 64)
    assert np.asarray(label_map).max() <= len(objects)
    assert Image.open(out / "street_overlay.png").size == (96, 64)


def test_generic_task_names_its_categories(workspace):
    root, checkpoint, image = workspace
    out = root / "generic"
    assert (
        main(
            [
                "image",
                str(image),
                "--checkpoint",
                str(checkpoint),
                "--task",
                "generic",
                "--text",
                "ins: person, car",
                "--threshold",
                "0.0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "street.json").read_text())
    assert report["categories"] == ["person", "car"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.png", "--prompt", "point:1,1"], "missing.png: the image does not exist"),
        (["{image}", "--prompt", "point:500,1"], "point (500,1) is outside the 96x64 frame"),
        (["{image}", "--prompt", "circle:1,2"], "unknown prompt type 'circle'"),
        (["{image}", "--task", "referring"], "task 'referring' needs a text"),
        (["{image}", "--prompt", "point:1,1", "--checkpoint", "{root}/nowhere"], "cannot load the X-SAM checkpoint"),
    ],
)
def test_errors_name_the_file_and_the_reason(workspace, capsys, arguments, message):
    root, checkpoint, image = workspace
    argv = ["image", *[a.format(image=image, root=root) for a in arguments]]
    if "--checkpoint" not in argv:
        argv += ["--checkpoint", str(checkpoint)]
    assert main([*argv, "--out", str(root / "errors")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err
