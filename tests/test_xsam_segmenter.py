"""The X-SAM segmenter through the pipeline's Segmenter protocol, on the tiny checkpoint."""

from __future__ import annotations

import pickle

import cv2
import numpy as np
import pytest

from operators.records import Instances, Prompt
from operators.segmenters import build_segmenter
from operators.segmenters.base import PromptMemory, Segmenter

HEIGHT, WIDTH = 90, 140


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    from xsam.testing_utils import make_tiny_checkpoint

    checkpoint = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))
    return build_segmenter("xsam", checkpoint=str(checkpoint), device="cpu", score_threshold=0.2)


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(5).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _prompts():
    scribble = np.zeros((HEIGHT, WIDTH), np.uint8)
    cv2.line(scribble, (80, 20), (120, 70), 1, thickness=5)
    return [
        Prompt(0, "point", points=((30.0, 40.0),)),
        Prompt(1, "box", box=(60.0, 10.0, 110.0, 60.0)),
        Prompt(2, "scribble", mask=scribble.astype(bool)),
    ]


def test_builds_through_the_registry_and_follows_the_protocol(segmenter):
    assert isinstance(segmenter, Segmenter)
    assert segmenter.name == "xsam"


def test_segments_a_frame_from_point_box_and_scribble_prompts(segmenter, frame):
    memory = segmenter.encode_prompts(frame, _prompts())
    assert isinstance(memory, PromptMemory)
    assert memory.prompt_ids == (0, 1, 2)
    assert 0 < memory.nbytes() < 64 * 1024
    pickle.loads(pickle.dumps(memory))

    instances = segmenter.segment(frame, memory)
    assert isinstance(instances, Instances)
    assert instances.shape == (HEIGHT, WIDTH) and len(instances) > 0
    assert set(instances.prompt_ids.tolist()) <= {0, 1, 2}
    assert (instances.scores >= 0.2).all()
    assert (instances.track_ids == -1).all()
    assert instances.embeddings.shape == (len(instances), 32) and instances.embeddings.dtype == np.float32


def test_refresh_keeps_the_prompt_ids(segmenter, frame):
    memory = segmenter.encode_prompts(frame, _prompts())
    instances = segmenter.segment(frame, memory)
    refreshed = segmenter.refresh(frame, memory, instances)
    assert refreshed.prompt_ids == memory.prompt_ids
    assert segmenter.segment(frame, refreshed).shape == (HEIGHT, WIDTH)


def test_prompt_outside_the_frame_is_refused(segmenter, frame):
    from operators.records import PromptError

    with pytest.raises(PromptError, match="outside"):
        segmenter.encode_prompts(frame, [Prompt(0, "point", points=((500.0, 5.0),))])


def test_asking_about_the_xsam_class_does_not_import_torch():
    """A job's driver checks the segmenter's placement (``is_lightweight``) before any actor builds it; only
    the numpy-only ``xsam.memory`` (the class's ``memory_type``) is imported for it."""
    import subprocess
    import sys

    code = ("import sys; from operators.segmenters import is_lightweight; "
            "assert is_lightweight('xsam') is False; print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
