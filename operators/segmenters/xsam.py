"""The X-SAM segmenter: visual prompts are encoded once per stream, frames are segmented from the cached encoding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from operators.records import Instances, Prompt

from xsam.memory import XSamPromptMemory  # numpy only

if TYPE_CHECKING:  # torch and the model load when a segmenter is built, not when a job asks about the class
    import torch


class XSamSegmenter:
    """:class:`~operators.segmenters.base.Segmenter` backed by :class:`xsam.XSamPredictor` (VGD task).

    ``segment`` runs only SAM and the mask decoder (the LLM ran in ``encode_prompts``); instances scoring below
    ``score_threshold`` are dropped and each kept one carries its decoder query state as ``embeddings``.
    ``refresh`` re-encodes from instances scoring at least ``refresh_threshold``, keeping the user's prompts pinned.
    """

    name = "xsam"
    memory_type = XSamPromptMemory

    def __init__(
        self,
        checkpoint: str,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        score_threshold: float = 0.5,
        refresh_threshold: float = 0.5,
        seed: int = 0,
    ):
        import torch

        from xsam import XSamPredictor

        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.predictor = XSamPredictor.from_pretrained(checkpoint, device=device, dtype=dtype, seed=seed)
        self.score_threshold = score_threshold
        self.refresh_threshold = refresh_threshold

    def encode_prompts(self, frame: np.ndarray, prompts: Sequence[Prompt]) -> XSamPromptMemory:
        height, width = frame.shape[:2]
        masks = [prompt.to_mask(height, width) for prompt in prompts]
        return self.predictor.encode_prompts(frame, masks, [prompt.prompt_id for prompt in prompts])

    def segment(self, frame: np.ndarray, memory: XSamPromptMemory) -> Instances:
        return self.segment_batch([frame], [memory])[0]

    def segment_batch(self, frames: Sequence[np.ndarray], memories: Sequence[XSamPromptMemory]) -> list[Instances]:
        """Several keyframes in one SAM and one decoder pass (:meth:`xsam.XSamPredictor.segment_batch`)."""
        results = self.predictor.segment_batch(frames, memories, threshold=self.score_threshold)
        return [
            Instances.from_masks(r.masks, r.scores, r.labels, *frame.shape[:2], r.embeddings)
            for frame, r in zip(frames, results)
        ]

    def refresh(self, frame: np.ndarray, memory: XSamPromptMemory, instances: Instances) -> XSamPromptMemory:
        return self.predictor.refresh(
            frame, memory, instances.masks, instances.scores, instances.prompt_ids, self.refresh_threshold
        )
