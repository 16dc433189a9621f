"""Checkpoints and done.json hold data only: a planted file never runs code nor stops a job; resume stays exact."""

from __future__ import annotations

import copy
import json
import pickle
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.clips import ClipSpec, make_clip
from operators.association import AssociationConfig
from operators.keyframes import KeyframeConfig
from operators.records import Prompt
from operators.segmenters.default import DefaultPromptMemory, DefaultSegmenter
from operators.state import StateError
from operators.stream import StreamProcessor, local_submit, run_stream
from pipeline.checkpoint import (
    CHECKPOINT_FILE, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, DONE_FILE, LEGACY_CHECKPOINT_FILE, StreamCheckpoints,
)
from pipeline.job import plan_streams, run_job
from pipeline.sources import open_video
from tests.test_pipeline import _job
from xsam.memory import XSamPromptMemory

FRAMES = 24
SIZE = (240, 320)
FINGERPRINT = {"segmenter": "default", "keyframe_every": 5}
SETTINGS = dict(keyframes=KeyframeConfig(every=5), association=AssociationConfig())


class _RunsCode:
    """Unpickling it creates ``marker``: what a planted pickle's ``__reduce__`` would do with a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(ClipSpec(seed=11, num_frames=FRAMES), tmp_path_factory.mktemp("clip") / "clip.mp4")


@pytest.fixture(scope="module")
def frames(clip):
    with open_video(clip.path) as reader:
        return list(reader.frames(0))


def _prompts(clip) -> list[Prompt]:
    """A box on frame 0 and a point waiting for frame 15 (asking for track id 5): the checkpoint at 10 holds a
    scheduled prompt too."""
    later = clip.suggested_prompt(clip.kinds[1], "point", prompt_id=1)
    return [clip.suggested_prompt(clip.kinds[1], "box"), replace(later, frame_index=15, track_id=5)]


def _records(frames, processor, **options) -> list[dict]:
    records = []
    run_stream(frames, processor, local_submit(DefaultSegmenter()), records.append, **options)
    return [{**r.to_dict(), "absent": r.absent_track_ids} for r in records]


def _checkpointed(clip, frames, folder: Path, at: int = 10) -> tuple[StreamCheckpoints, list[dict], dict]:
    """A full run that saves its checkpoint at frame ``at``: the checkpoints, every record, the state saved."""
    warnings: list[str] = []
    checkpoints = StreamCheckpoints(folder, FINGERPRINT, DefaultPromptMemory, warnings.append)
    processor = StreamProcessor("s", "clip.mp4", _prompts(clip), **SETTINGS)
    saved = {}

    def checkpoint(last_image):
        if processor.next_index == at:
            checkpoints.save(processor, last_image)
            saved.update(copy.deepcopy(processor.to_state()))

    records = _records(frames, processor, checkpoint=checkpoint, checkpoint_every=at)
    assert saved and not warnings
    return checkpoints, records, saved


def test_a_resumed_stream_gives_the_records_of_an_uninterrupted_one(clip, frames, tmp_path):
    checkpoints, full, _ = _checkpointed(clip, frames, tmp_path)
    resume = checkpoints.load(SIZE, "s", "clip.mp4", **SETTINGS)
    assert resume is not None and resume.next_index == 10
    processor = resume.processor
    assert processor.memories and processor.scheduled and processor.assigner.tracks and processor.last is not None
    assert any(t.bank.pinned is not None for t in processor.assigner.tracks.values())
    assert processor.scheduled[0].track_id == 5
    resumed = _records(frames[10:], processor, previous=resume.previous_image)
    assert resumed == full[10:]
    assert (resumed[5]["kind"], resumed[5]["reason"]) == ("keyframe", "prompt"), "the scheduled prompt ran"
    assert processor.stats.frames == FRAMES and processor.stats.keyframes == sum(r["kind"] == "keyframe" for r in full)


def _set(path: str, value):
    """A mutation of a saved processor state: ``path`` is dotted keys and list indices."""
    def mutate(state):
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = state
        for key in parents:
            target = target[key]
        target[last] = value(target[last]) if callable(value) else value
    return mutate


@pytest.mark.parametrize("mutate, named", [
    (_set("policy.last_signature", lambda a: a.astype(np.float64)), "keyframe_policy.last_signature: expected float32"),
    (_set("last.masks", lambda a: np.zeros((len(a), 120, 160), bool)),
     "processor.last.masks: expected shape Nx240x320, got"),
    (_set("last.scores", {"a": 1}), "scores: expected an array, got dict"),
    (_set("assigner.tracks.0.track_id", "1"), "tracks[0].track_id: expected an integer, got str"),
    (_set("assigner.tracks.0.bank.recent", lambda r: [np.zeros(3, np.float32)]), "bank.recent[0]: expected shape"),
    (_set("assigner.next_id", 1), "next_id: 1 is below"),
    (_set("memories.0.models.0.pinned.posterior", np.zeros(10, np.float32)), "pinned.posterior: expected shape 2048"),
    (_set("scheduled.0", Prompt(1, "mask", 15, mask=np.ones((10, 10), bool)).to_state()), "mask is 10x10"),
    (_set("scheduled.0.kind", "lasso"), "unknown prompt kind"),
    (_set("stats.frames", -1), "stats.frames: -1 is below 0"),
    (_set("stats.keyframe_reasons", [1]), "keyframe_reasons: expected a mapping"),
    (_set("next_index", None), "next_index: expected an integer, got NoneType"),
])
def test_a_state_of_wrong_types_or_shapes_is_refused_naming_the_field(clip, frames, tmp_path, mutate, named):
    _, _, state = _checkpointed(clip, frames, tmp_path)
    mutate(state)
    with pytest.raises(StateError, match=re.escape(named)):
        StreamProcessor.from_state(state, DefaultPromptMemory, SIZE, "s", "clip.mp4", **SETTINGS)
    with pytest.raises(StateError, match="expected a mapping, got list"):
        StreamProcessor.from_state([], DefaultPromptMemory, SIZE, "s", "clip.mp4", **SETTINGS)


def test_xsam_prompt_memory_goes_to_arrays_and_back_and_refuses_others():
    rng = np.random.default_rng(0)
    memory = XSamPromptMemory((7, 3), rng.random((3, 16), np.float32), np.array([0, 1, 0]),
                              rng.random((3, 8), np.float32), rng.random(8, np.float32))
    state = memory.to_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    restored = XSamPromptMemory.from_state(state)
    assert restored.prompt_ids == (7, 3) and restored.nbytes() == memory.nbytes()
    for name in ("region_tokens", "region_labels", "conditions", "seg_embedding"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(memory, name))
    for name, value, named in [("region_tokens", state["region_tokens"].astype(np.float64), "region_tokens"),
                               ("region_labels", np.array([0, 1, 2]), "region label"),
                               ("conditions", state["conditions"][:2], "one row per region"),
                               ("prompt_ids", np.array([7, 7]), "distinct")]:
        with pytest.raises(ValueError, match=named):
            XSamPromptMemory.from_state({**state, name: value})


def _archive(path: Path, document: dict, **arrays) -> None:
    """A checkpoint file as someone with write access to the output folder could make it (pickles allowed)."""
    np.savez(path, state=np.frombuffer(json.dumps(document).encode(), np.uint8), **arrays)


def _huge_array(path: Path) -> None:
    """A checkpoint whose array header claims 10 TB: NumPy allocates what a header says before reading."""
    _archive(path, {**_header(FINGERPRINT), "previous_image": {"$array": "a0"}, "processor": {}})
    with zipfile.ZipFile(path, "a") as archive, archive.open("a0.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False, "shape": (10**13,)})


def _header(fingerprint: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": fingerprint}


@pytest.mark.parametrize("plant, named", [
    (lambda path, marker: path.write_bytes(b"not a zip"), "not resumed from it"),
    (lambda path, marker: path.write_bytes(pickle.dumps(_RunsCode(marker))), "pickled data"),
    (lambda path, marker: _archive(path, {**_header(FINGERPRINT), "previous_image": {"$array": "a0"}, "processor": {}},
                                   a0=np.array([_RunsCode(marker)], dtype=object)), "pickled data"),
    (lambda path, marker: _archive(path, {**_header(FINGERPRINT), "previous_image": {"$array": "missing"}}),
     "no array 'missing'"),
    (lambda path, marker: _archive(path, {**_header(FINGERPRINT), "version": 99}), "version 99"),
    (lambda path, marker: _archive(path, {**_header(FINGERPRINT), "previous_image": {"width": 320}, "processor": {}}),
     "previous_image: expected an array, got dict"),
    (lambda path, marker: _archive(path, {**_header(FINGERPRINT), "processor": {}, "previous_image": {"$array": "a0"}},
                                   a0=np.zeros((120, 160, 3), np.uint8)), "previous_image: expected shape 240x320x3"),
    (lambda path, marker: _archive(path, {**_header({"other": 1})}), "written with other settings"),
    (lambda path, marker: _huge_array(path), "not resumed from it"),
])
def test_a_planted_checkpoint_is_ignored_with_a_warning_and_runs_nothing(tmp_path, plant, named):
    marker = tmp_path / "code-ran"
    plant(tmp_path / CHECKPOINT_FILE, marker)
    warnings: list[str] = []
    checkpoints = StreamCheckpoints(tmp_path, FINGERPRINT, DefaultPromptMemory, warnings.append)
    assert checkpoints.load(SIZE, "s", "clip.mp4", **SETTINGS) is None
    assert not marker.exists(), "the planted file ran code"
    assert len(warnings) == 1 and str(tmp_path / CHECKPOINT_FILE) in warnings[0] and named in warnings[0], warnings


def test_a_segmenter_whose_memory_cannot_be_saved_is_not_checkpointed_and_says_so(clip, frames, tmp_path):
    class Opaque:  # a user's memory without to_state
        prompt_ids = (0,)

    warnings: list[str] = []
    processor = StreamProcessor("s", "clip.mp4", _prompts(clip), **SETTINGS)
    processor.memories = [Opaque()]
    checkpoints = StreamCheckpoints(tmp_path, FINGERPRINT, DefaultPromptMemory, warnings.append)
    checkpoints.save(processor, frames[0].image)
    checkpoints.save(processor, frames[0].image)
    assert not (tmp_path / CHECKPOINT_FILE).exists()
    assert warnings == ["prompt memory Opaque has no to_state (see PromptMemory): this video is not checkpointed, "
                        "a re-run starts it again"]
    no_type = StreamCheckpoints(tmp_path, FINGERPRINT, None, warnings.append)
    no_type.save(StreamProcessor("s", "clip.mp4", [], **SETTINGS), frames[0].image)
    assert "declares no memory_type" in warnings[-1] and not (tmp_path / CHECKPOINT_FILE).exists()


# --------------------------------------------------------------------------- a real job on Ray


@pytest.fixture(scope="module")
def short_clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("short")
    return [make_clip(ClipSpec(seed=20 + i, num_frames=12), folder / f"v{i}.mp4") for i in range(8)]


def test_planted_checkpoints_and_bad_done_files_neither_run_code_nor_stop_the_job(ray_local, short_clips, tmp_path):
    out = tmp_path / "out"
    config = _job(short_clips, out, checkpoint_every=5)
    specs = {spec.stream_id: spec for spec in plan_streams(config)[0]}
    markers = [tmp_path / "legacy-ran", tmp_path / "npz-ran"]
    for spec in specs.values():
        spec.stream_dir.mkdir(parents=True)
    (specs["v0"].stream_dir / LEGACY_CHECKPOINT_FILE).write_bytes(pickle.dumps(_RunsCode(markers[0])))
    _archive(specs["v1"].stream_dir / CHECKPOINT_FILE,
             {**_header(specs["v1"].fingerprint), "previous_image": {"$array": "a0"}, "processor": {}},
             a0=np.array([_RunsCode(markers[1])], dtype=object))
    _archive(specs["v2"].stream_dir / CHECKPOINT_FILE,  # valid data of the wrong shape: a dict for the arrays
             {**_header(specs["v2"].fingerprint), "previous_image": {"height": 240}, "processor": {"memories": {}}})
    done_files = {
        "v3": b"null", "v4": b"[]", "v5": b"\xff\xfe{\"fingerprint\"",
        "v6": json.dumps({"fingerprint": specs["v6"].fingerprint}).encode(),
        "v7": json.dumps({"fingerprint": specs["v7"].fingerprint, "report": {"frames": "many"}}).encode(),
    }
    for stream_id, content in done_files.items():
        (specs[stream_id].stream_dir / DONE_FILE).write_bytes(content)

    summary = run_job(config)

    assert not any(m.exists() for m in markers), "a planted pickle ran code"
    assert [(v.stream_id, v.status, v.frames, v.resumed_from) for v in summary.videos] == [
        (f"v{i}", "done", 12, None) for i in range(8)], summary.to_dict()["failures"]
    written = json.loads((out / "summary.json").read_text())
    assert written["counts"]["done"] == 8
    by_id = {v["stream_id"]: v for v in written["videos"]}
    assert any(LEGACY_CHECKPOINT_FILE in w and "not read" in w for w in by_id["v0"]["warnings"]), by_id["v0"]
    assert any("pickled data" in w for w in by_id["v1"]["warnings"]), by_id["v1"]
    assert any("previous_image: expected an array, got dict" in w for w in by_id["v2"]["warnings"]), by_id["v2"]
    for stream_id in done_files:
        path = str(specs[stream_id].stream_dir / DONE_FILE)
        assert sum(path in w and "processed again" in w for w in written["warnings"]) == 1, (stream_id,
                                                                                              written["warnings"])
    assert any("report's frames is wrong" in w for w in written["warnings"])
    for spec in specs.values():  # finished: the real done.json, no checkpoint of any kind left behind
        assert json.loads((spec.stream_dir / DONE_FILE).read_text())["fingerprint"] == spec.fingerprint
        assert not (spec.stream_dir / CHECKPOINT_FILE).exists()
        assert not (spec.stream_dir / LEGACY_CHECKPOINT_FILE).exists()
    again = run_job(config)
    assert [v.status for v in again.videos] == ["skipped"] * 8 and not again.warnings
