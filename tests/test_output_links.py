"""No write follows a symbolic link planted in the output folder (issue 14, item 7): output folders are shared, so
anyone who can write there could otherwise make a job overwrite any file its user can write."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from operators.errors import OutputError
from operators.records import FrameRecord, Instances
from operators.output_files import LINK_REASON, open_output, stream_dir, write_output
from operators.sinks import JsonlSink, PalettePngSink, VideoSink
from operators.sinks.base import StreamInfo
from operators.video_writer import H264Writer

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}
PRECIOUS = b"not the pipeline's to write\n"


def _victim(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PRECIOUS)
    return path


def _plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def test_files_written_in_place_refuse_links_and_whole_documents_replace_them(tmp_path):
    victim = _victim(tmp_path / "elsewhere" / "victim")
    out = tmp_path / "out"
    _plant(out / "appended.jsonl", victim)
    _plant(out / "summary.json", victim)
    with pytest.raises(OutputError) as refused:
        open_output(out / "appended.jsonl", "a+b")
    assert (refused.value.source, refused.value.reason) == (str(out / "appended.jsonl"), LINK_REASON)
    write_output(out / "summary.json", '{"ok": true}')
    assert not (out / "summary.json").is_symlink() and json.loads((out / "summary.json").read_text()) == {"ok": True}
    assert victim.read_bytes() == PRECIOUS
    assert sorted(p.name for p in out.iterdir()) == ["appended.jsonl", "summary.json"]  # no partial file left

    _plant(out / "linked", tmp_path / "elsewhere")
    _plant(out / "video" / "masks", tmp_path / "elsewhere")
    for parts in (("linked",), ("video", "masks")):
        with pytest.raises(OutputError) as refused:
            stream_dir(out, *parts)
        assert (refused.value.source, refused.value.reason) == (str(out.joinpath(*parts)), LINK_REASON)


def test_every_sink_refuses_a_link_where_its_files_go(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    victim = _victim(elsewhere / "victim")
    _plant(out / "s" / "frames.jsonl", victim)
    _plant(out / "s" / "masks" / "000000.png", victim)
    _plant(out / "s" / "annotated.parts", elsewhere)
    stream = StreamInfo("s", "clip.mp4", 64, 48, 25.0)
    for sink, planted in ((JsonlSink(out), "frames.jsonl"), (VideoSink(out), "annotated.parts")):
        with pytest.raises(OutputError) as refused:
            sink.open(stream)
        assert (refused.value.source, refused.value.reason) == (str(out / "s" / planted), LINK_REASON)
    png = PalettePngSink(out)
    png.open(stream)
    with pytest.raises(OutputError) as refused:
        png.write(FrameRecord("s", 0, 0.0, "keyframe", Instances.empty(48, 64)))
    assert (refused.value.source, refused.value.reason) == (str(out / "s" / "masks" / "000000.png"), LINK_REASON)
    with pytest.raises(OutputError) as refused:
        H264Writer(out / "s" / "masks" / "000000.png", 25, 64, 48)
    assert refused.value.reason == LINK_REASON
    assert victim.read_bytes() == PRECIOUS and os.listdir(elsewhere) == ["victim"]


def _clip(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with H264Writer(path, 25, 64, 48) as writer:
        for _ in range(6):
            writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    return path


def test_a_job_writes_nothing_through_links_planted_in_its_output_folder(tmp_path):
    """Each video whose output has a planted link fails with the file and the reason named; the victims are
    untouched; the clean video and the job summary (whose planted link is replaced) are written."""
    clips = [_clip(tmp_path / f"{name}.mp4", seed) for seed, name in enumerate(("a", "b", "c", "d"))]
    elsewhere = tmp_path / "elsewhere"
    victims = [_victim(elsewhere / f"victim{i}") for i in range(3)]
    out = tmp_path / "out"
    _plant(out / "a" / "frames.jsonl", victims[0])
    _plant(out / "b", elsewhere)
    _plant(out / "c" / "annotated.mp4", victims[1])
    _plant(out / "summary.json", victims[2])
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", *map(str, clips), "--prompt", "point:10,10", "--out", str(out),
         "--sink", "jsonl", "--sink", "mp4", "--no-split"],
        capture_output=True, text=True, timeout=300, env=ENV, cwd=ROOT)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert all(v.read_bytes() == PRECIOUS for v in victims)
    assert sorted(os.listdir(elsewhere)) == ["victim0", "victim1", "victim2"]
    assert not (out / "summary.json").is_symlink()
    videos = {v["stream_id"]: v for v in json.loads((out / "summary.json").read_text())["videos"]}
    for name, planted in (("a", out / "a" / "frames.jsonl"), ("b", out / "b"), ("c", out / "c" / "annotated.mp4")):
        assert videos[name]["status"] == "failed", videos[name]
        assert (videos[name]["error"]["source"], videos[name]["error"]["reason"]) == (str(planted), LINK_REASON)
    assert videos["d"]["status"] == "done" and videos["d"]["frames"] == 6
    assert len((out / "d" / "frames.jsonl").read_text().splitlines()) == 6
