"""The segmenter interface every model implements, so the pipeline never knows which one runs.

A segmenter is stateless between calls: everything it needs about a stream's
prompts lives in the :class:`PromptMemory` it returned from
:meth:`Segmenter.encode_prompts`. That keeps one pool of segmenter workers
shareable by all streams, and makes a stream's memory small and checkpointable.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from operators.records import Box, Instances, Prompt


@runtime_checkable
class PromptMemory(Protocol):
    """Per-stream cached encoding of the visual prompts (opaque to the pipeline).

    A stream's checkpoint (an archive job resumes a video from it) saves each memory as its
    :meth:`to_state` and rebuilds it with the class's :meth:`from_state`, found as the segmenter class's
    ``memory_type`` attribute. A segmenter without them still runs: its streams are not checkpointed
    (the video's report warns) and a re-run starts such a video from its first frame.
    """

    @property
    def prompt_ids(self) -> tuple[int, ...]: ...

    def nbytes(self) -> int:
        """Size of the memory in bytes; reported per stream and constant in stream length."""
        ...

    def to_state(self) -> dict[str, Any]:
        """The memory as plain data: JSON values (numbers, strings, lists, str-keyed dicts) and numpy arrays
        of plain dtypes. Nothing that needs pickling: a checkpoint holds data only."""
        ...

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "PromptMemory":
        """The memory :meth:`to_state` gave, read back from a file anyone with access to the output folder
        could have written: check every type, dtype and shape, raise ValueError (or
        :class:`operators.state.StateError`) naming what is wrong."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    """Visual-grounded segmentation of RGB ``uint8`` ``(H, W, 3)`` frames.

    An implementation may set the class attribute ``lightweight = True`` (no weights, tens of ms per
    keyframe on one CPU core): the pipeline then runs it inside each stream's own process, where a round trip
    to a shared model actor would add a sizeable share of the call. A model that runs faster on a batch may also define
    ``segment_batch(frames, memories) -> list[Instances]``; :func:`segment_many` uses it. One whose cost
    follows the area searched may define ``segment_regions(frame, memory, regions) -> Instances``;
    :func:`segment_within` uses it.
    """

    name: str

    def encode_prompts(self, frame: np.ndarray, prompts: Sequence[Prompt]) -> PromptMemory:
        """Encode the prompts drawn on ``frame`` once; the result is cached per stream."""
        ...

    def segment(self, frame: np.ndarray, memory: PromptMemory) -> Instances:
        """Find every instance of every prompted kind in ``frame`` (VGD). Track ids stay -1."""
        ...

    def refresh(self, frame: np.ndarray, memory: PromptMemory, instances: Instances) -> PromptMemory:
        """Update the memory from confident ``instances`` of a keyframe; the user's prompts stay pinned."""
        ...


def segment_many(segmenter: Segmenter, frames: Sequence[np.ndarray], memories: Sequence[PromptMemory]) -> list[Instances]:
    """``segment`` each frame with its memory: in one ``segment_batch`` call where the segmenter has one."""
    batch = getattr(segmenter, "segment_batch", None)
    if batch is None or len(frames) < 2:
        return [segmenter.segment(frame, memory) for frame, memory in zip(frames, memories)]
    return batch(frames, memories)


def segment_within(segmenter: Segmenter, frame: np.ndarray, memory: PromptMemory, regions: Sequence[Box]) -> Instances:
    """The instances within ``regions`` of ``frame``: searched there alone where the segmenter can
    (``segment_regions``), else the whole frame, a superset."""
    regional = getattr(segmenter, "segment_regions", None)
    return segmenter.segment(frame, memory) if regional is None else regional(frame, memory, regions)
