"""The two-layer MLP projectors between towers (X-SAM's ``DynamicProjectorModel`` with depth 2)."""

from __future__ import annotations

import torch
from torch import nn
from transformers.activations import ACT2FN

from xsam.pixel_shuffle import pixel_shuffle


class XSamProjector(nn.Module):
    """Linear -> activation -> Linear, optionally after folding a channels-last map with :func:`pixel_shuffle`.

    X-SAM uses three: ``visual_projector`` (SigLIP -> LLM), ``seg_projector`` (SAM, pixel-shuffled 0.5 -> LLM)
    and ``llm_projector`` (LLM -> decoder width).
    """

    def __init__(self, in_features: int, out_features: int, hidden_act: str = "gelu", downsample_ratio: float = 1.0):
        super().__init__()
        self.downsample_ratio = downsample_ratio
        self.linear_1 = nn.Linear(int(in_features / downsample_ratio**2), out_features)
        self.act = ACT2FN[hidden_act]
        self.linear_2 = nn.Linear(out_features, out_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, N, C)`` tokens, or a ``(B, H, W, C)`` map that is shuffled and flattened to tokens first."""
        if features.ndim == 4:
            if self.downsample_ratio != 1.0:
                features = pixel_shuffle(features, self.downsample_ratio)
            features = features.flatten(1, 2)
        return self.linear_2(self.act(self.linear_1(features)))
