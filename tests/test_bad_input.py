"""Hostile or broken input through the real command line (issue 14 items 5, 6, 8): each is refused with one
``error:`` line naming the input and the reason, exit 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def refused(*args: str, env: dict | None = None) -> str:
    """The one ``error:`` line of a command that must stop with exit 2 before any work."""
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                            timeout=120, env={**ENV, **(env or {})}, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def run_refused(tmp_path: Path, *args: str, env: dict | None = None) -> str:
    line = refused("run", str(tmp_path / "any.mp4"), "--out", str(tmp_path / "out"), *args, env=env)
    assert not (tmp_path / "out").exists(), "refused before the output folder is made"
    return line


@pytest.mark.parametrize("spec", ["box:nan,nan,nan,nan", "box:0,0,inf,inf", "point:1e999,3"])
def test_non_finite_command_line_prompt_is_named(tmp_path, spec):
    line = run_refused(tmp_path, "--prompt", spec)
    assert f"error: {spec}: prompt 0: coordinates must be finite numbers" in line


@pytest.mark.parametrize("name, text", [
    ("prompts.json", '{"walk.mp4": [{"type": "point", "points": [4, 4]}, {"type": "box", "box": [0, 0, 1e999, 5]}]}'),
    ("prompts.yaml", "'*':\n  - {type: point, points: [.nan, 3]}\n"),
    ("inf.yaml", "'*':\n  - {type: box, box: [0, 0, .inf, 3]}\n"),
])
def test_non_finite_prompt_file_coordinates_are_named(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    line = run_refused(tmp_path, "--prompts-file", str(tmp_path / name))
    prompt = 1 if name.endswith(".json") else 0
    assert f"{tmp_path / name} [" in line and f"prompt {prompt}: coordinates must be finite numbers" in line


def test_decompression_bomb_mask_is_named(tmp_path):
    Image.new("1", (15000, 15000)).save(tmp_path / "huge.png")  # 225 Mpx in a few hundred kB
    line = run_refused(tmp_path, "--prompt", f"mask:{tmp_path / 'huge.png'}")
    assert f"prompt image {tmp_path / 'huge.png'}" in line and "225000000 pixels" in line


def test_prompt_file_nested_5000_deep_is_named(tmp_path):
    (tmp_path / "deep.json").write_text('{"*": ' + "[" * 5000 + "]" * 5000 + "}")
    line = run_refused(tmp_path, "--prompts-file", str(tmp_path / "deep.json"))
    assert f"error: {tmp_path / 'deep.json'}: prompt file nests too deep" in line


@pytest.mark.parametrize("content, reason", [
    (bytes(range(256)) * 4, "config file is not UTF-8 text"),
    (b"sources: [a.mp4\nout_dir: out\n", "config file is not valid YAML/JSON"),
])
def test_unreadable_config_file_is_named(tmp_path, content, reason):
    (tmp_path / "job.yaml").write_bytes(content)
    line = run_refused(tmp_path, "--prompt", "point:1,1", "--config", str(tmp_path / "job.yaml"))
    assert f"error: {tmp_path / 'job.yaml'}: {reason}" in line


def test_config_that_is_a_folder_is_named(tmp_path):
    line = run_refused(tmp_path, "--prompt", "point:1,1", "--config", str(tmp_path))
    assert f"error: {tmp_path}: config file cannot be read" in line


@pytest.mark.parametrize("name, value, reason", [
    ("XSAM_PIPELINE_SINKS", "[jsonl", "XSAM_PIPELINE_SINKS: the value is not valid YAML/JSON (expected ',' or ']'"),
    ("XSAM_PIPELINE_SINKS", "!!python/object/apply:os.system [echo owned]",
     "XSAM_PIPELINE_SINKS: the value is not valid YAML/JSON (could not determine a constructor"),
    ("XSAM_PIPELINE_SINKS", "\t- jsonl", "XSAM_PIPELINE_SINKS: the value is not valid YAML/JSON (found character"),
    ("XSAM_PIPELINE_SINKS", "[" * 5000, "XSAM_PIPELINE_SINKS: the value nests too deep to be read"),
    ("XSAM_PIPELINE_KEYFRAME_EVERY", "{a: [", "--keyframe-every: Input should be a valid integer"),
])
def test_unparsable_environment_value_is_named(tmp_path, name, value, reason):
    assert f"error: {reason}" in run_refused(tmp_path, "--prompt", "point:1,1", env={name: value})


@pytest.mark.parametrize("weights, reason", [
    (b"\xff" * 64, "not a readable safetensors file"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}',
     "not a readable safetensors file"),
])
def test_image_with_a_corrupt_safetensors_checkpoint_is_named(tmp_path, weights, reason):
    from xsam import XSamConfig

    checkpoint = tmp_path / "ckpt"
    XSamConfig().save_pretrained(str(checkpoint))
    (checkpoint / "model.safetensors").write_bytes(weights)
    Image.new("RGB", (32, 24)).save(tmp_path / "street.png")
    line = refused("image", str(tmp_path / "street.png"), "--checkpoint", str(checkpoint), "--prompt", "point:1,1",
                   "--out", str(tmp_path / "out"))
    assert f"{checkpoint / 'model.safetensors'}: {reason}" in line


def test_image_with_a_corrupt_checkpoint_config_is_named(tmp_path):
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_bytes(b'{"model_type": ')
    (checkpoint / "model.safetensors").write_bytes(b"")
    Image.new("RGB", (32, 24)).save(tmp_path / "street.png")
    line = refused("image", str(tmp_path / "street.png"), "--checkpoint", str(checkpoint), "--prompt", "point:1,1",
                   "--out", str(tmp_path / "out"))
    assert f"{checkpoint / 'config.json'}: not a readable JSON config" in line


def test_frames_too_small_to_track_are_named_and_the_other_videos_finish(tmp_path):
    import json

    import numpy as np

    from operators.video_writer import H264Writer

    rng = np.random.default_rng(5)
    for name, (width, height) in {"dot.mp4": (2, 2), "strip.mp4": (46, 8)}.items():
        with H264Writer(tmp_path / name, 25, width, height) as writer:
            for _ in range(6):
                writer.write(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    (tmp_path / "pixel").mkdir()
    for i in range(3):
        Image.new("RGB", (1, 1), (i, i, i)).save(tmp_path / "pixel" / f"{i:05d}.png")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", *(str(tmp_path / n) for n in (
        "dot.mp4", "pixel", "strip.mp4")), "--prompt", "point:0,0", "--out", str(out), "--sink", "jsonl"],
        capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert "OpenCV" not in result.stderr and "Traceback" not in result.stderr
    videos = {Path(v["source"]).name: v for v in json.loads((out / "summary.json").read_text())["videos"]}
    for name, size in (("dot.mp4", "2x2"), ("pixel", "1x1")):
        assert videos[name]["status"] == "failed"
        assert videos[name]["error"]["reason"] == (f"frame {size} is smaller than the minimum 12x8 (optical flow "
                                                   "needs 8 pixels on the shorter side and 12 on the longer)")
        assert "traceback" not in videos[name]["error"]
    assert videos["strip.mp4"]["status"] == "done" and videos["strip.mp4"]["frames"] == 6
