"""The cached visual prompts of a stream, in numpy only: no torch needed to hold, save or restore them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class XSamPromptMemory:
    """A stream's cached visual prompts: a few KB per prompt, constant over the stream.

    prompt_ids: the user's prompt ids; label k of a result is ``prompt_ids[k]``.
    region_tokens: ``(R, D_llm)`` region tokens of the last LLM pass. The first ``len(prompt_ids)`` rows are the
        user's, pinned for the stream; later rows come from the latest keyframe refresh.
    region_labels: ``(R,)`` index into ``prompt_ids`` of each region.
    conditions: ``(R, D)`` the LLM's condition embedding of each region (the decoder's classes).
    seg_embedding: ``(D,)`` the ``<SEG>`` embedding that conditions the decoder's queries.
    """

    prompt_ids: tuple[int, ...]
    region_tokens: np.ndarray
    region_labels: np.ndarray
    conditions: np.ndarray
    seg_embedding: np.ndarray

    def nbytes(self) -> int:
        arrays = (self.region_tokens, self.region_labels, self.conditions, self.seg_embedding)
        return sum(a.nbytes for a in arrays) + 8 * len(self.prompt_ids)

    def to_state(self) -> dict[str, np.ndarray]:
        """The memory as arrays only (a data-only file can hold them); :meth:`from_state` reads them back."""
        return {"prompt_ids": np.asarray(self.prompt_ids, np.int64), "region_tokens": self.region_tokens,
                "region_labels": self.region_labels, "conditions": self.conditions,
                "seg_embedding": self.seg_embedding}

    @classmethod
    def from_state(cls, state: object) -> XSamPromptMemory:
        """The memory :meth:`to_state` gave; ValueError naming the array that has the wrong type or shape."""
        if not isinstance(state, dict):
            raise ValueError(f"an X-SAM prompt memory is a mapping of arrays, got {type(state).__name__}")
        dtypes = {"prompt_ids": np.int64, "region_tokens": np.float32, "region_labels": np.int64,
                  "conditions": np.float32, "seg_embedding": np.float32}
        ndims = {"prompt_ids": 1, "region_tokens": 2, "region_labels": 1, "conditions": 2, "seg_embedding": 1}
        for name, dtype in dtypes.items():
            array = state.get(name)
            if not isinstance(array, np.ndarray) or array.dtype != dtype or array.ndim != ndims[name]:
                got = f"{array.dtype} {array.shape}" if isinstance(array, np.ndarray) else type(array).__name__
                raise ValueError(f"memory.{name}: expected a {ndims[name]}-D {np.dtype(dtype)} array, got {got}")
        prompt_ids, labels = state["prompt_ids"], state["region_labels"]
        regions, (_, width) = len(labels), state["conditions"].shape
        if len(set(prompt_ids.tolist())) != len(prompt_ids) or regions < len(prompt_ids):
            raise ValueError(f"memory: {len(prompt_ids)} prompt ids (distinct) need as many regions at least, "
                             f"got {regions}")
        if len(state["region_tokens"]) != regions or len(state["conditions"]) != regions:
            raise ValueError(f"memory: region_tokens, region_labels and conditions must have one row per region "
                             f"({regions})")
        if len(state["seg_embedding"]) != width or (labels.size and not (0 <= labels.min() and
                                                                        labels.max() < len(prompt_ids))):
            raise ValueError("memory: seg_embedding must match the conditions' width and every region label "
                             "must index a prompt id")
        return cls(tuple(prompt_ids.tolist()), state["region_tokens"], labels, state["conditions"],
                   state["seg_embedding"])
