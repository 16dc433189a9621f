"""Open-vocabulary class head: queries are classified by cosine similarity to the LLM's condition embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class XSamClassHead(nn.Module):
    """``exp(logit_scale) * cos(query, class)`` over the prompt's conditions plus a learned background class.

    The classes are whatever the prompt named (categories, phrases, visual prompts), so there is no weight
    matrix: ``background`` (X-SAM's ``bg_embeds``) is appended as the last class. Logits are clamped to
    ``+-clamp`` and padded classes (batches with different class counts) are set to ``padded_logit``.
    """

    def __init__(self, hidden_size: int, clamp: float, padded_logit: float):
        super().__init__()
        self.clamp = clamp
        self.padded_logit = padded_logit
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07)))
        self.background = nn.Embedding(1, hidden_size)

    def forward(
        self, query_states: torch.Tensor, class_embeddings: torch.Tensor, class_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``(B, Q, D)`` queries, ``(B, C, D)`` classes and optional boolean ``(B, C)`` validity -> ``(B, Q, C+1)``."""
        background = self.background.weight[None].expand(len(class_embeddings), -1, -1)
        classes = torch.cat([class_embeddings.to(background.dtype), background], dim=1)
        logits = self.logit_scale.exp() * torch.einsum(
            "bqd,bcd->bqc", F.normalize(query_states, dim=-1), F.normalize(classes, dim=-1)
        )
        logits = logits.clamp(-self.clamp, self.clamp)
        if class_mask is not None:
            valid = torch.cat([class_mask, class_mask.new_ones(len(class_mask), 1)], dim=1).bool()
            logits = logits.masked_fill(~valid[:, None, :], self.padded_logit)
        return logits
