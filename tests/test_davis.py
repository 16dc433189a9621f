"""DAVIS conventions end to end: objects: prompts from an annotation PNG, frame-folder videos, the eval command."""

from __future__ import annotations

import numpy as np
import pytest

from bench.clips import ClipSpec, make_clip
from operators.association import TrackAssigner
from operators.errors import InvalidPromptError
from operators.keyframes import KeyframeConfig
from operators.metrics import region_similarity
from operators.records import Instances, Prompt
from operators.segmenters import build_segmenter
from operators.stream import StreamProcessor, local_submit, run_stream
from pipeline.prompts import PromptBook
from pipeline.sources import open_video
from tests.davis_layout import write_annotation

THREE_OBJECTS = ClipSpec(seed=5, num_frames=24, kinds=("red_blob", "blue_tile"), instances_per_kind=(2, 1))


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(THREE_OBJECTS, tmp_path_factory.mktemp("davis") / "three.mp4")


def _stream(clip, prompts):
    records = []
    processor = StreamProcessor("s", str(clip.path), prompts, keyframes=KeyframeConfig(every=6))
    with open_video(clip.path) as video:
        run_stream(video.frames(), processor, local_submit(build_segmenter("default")), records.append)
    return records


def test_objects_prompts_give_each_object_its_index_as_track_id(clip, tmp_path):
    # Indices 2, 3 and 5 (not 1..3): each object's index is its id, whatever the others'.
    indices = dict(zip(sorted(clip.masks[0]), (5, 2, 3)))
    write_annotation(tmp_path / "00000.png", {indices[o]: m for o, m in clip.masks[0].items()})
    prompts = PromptBook.from_cli([f"objects:{tmp_path / '00000.png'}"]).default
    records = _stream(clip, prompts)
    for obj, index in indices.items():
        for record in (records[0], records[-1]):
            mine = record.instances[record.instances.track_ids == index]
            assert len(mine) == 1 and mine.prompt_ids[0] == index
            assert region_similarity(mine.masks[0], clip.masks[record.frame_index][obj]) > 0.7
    others = {int(t) for r in records for t in r.instances.track_ids} - set(indices.values())
    assert all(t > 5 for t in others)  # instances the prompts also find take ids above the asked ones


def test_an_asked_id_a_track_had_already_gives_the_next_free_one():
    square = np.zeros((40, 40), bool)
    square[5:15, 5:15] = True
    other = np.zeros((40, 40), bool)
    other[25:35, 25:35] = True
    assigner = TrackAssigner()
    first = assigner.assign_keyframe(Instances.from_masks([square], [0.9], [0], 40, 40), Instances.empty(40, 40), 0)
    assert first.track_ids.tolist() == [1]
    late = Prompt(4, "mask", 3, mask=other, track_id=1)  # id 1 is taken: the object gets 2
    found = Instances.from_masks([square, other], [0.9, 0.9], [0, 4], 40, 40)
    second = assigner.assign_keyframe(found, first, 3, named=[late])
    assert sorted(zip(second.prompt_ids.tolist(), second.track_ids.tolist())) == [(0, 1), (4, 2)]


def test_an_annotation_of_another_size_is_named_with_the_frame(clip, tmp_path):
    write_annotation(tmp_path / "small.png", {1: np.ones((10, 12), bool)})
    prompts = PromptBook.from_cli([f"objects:{tmp_path / 'small.png'}"]).default
    with pytest.raises(InvalidPromptError, match=r"mask is 12x10, the frame is 320x240") as caught:
        _stream(clip, prompts)
    assert caught.value.frame_index == 0
