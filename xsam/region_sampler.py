"""Visual prompt -> one region token (X-SAM ``NaiveSamplerModel``, archive branch: max-pooled, no parameters)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class XSamRegionSampler(nn.Module):
    """Samples the LLM-space SAM tokens under each prompt mask and max-pools them into one token per prompt.

    The prompt mask lives on the padded SAM canvas. ``num_points`` of its pixels are drawn (all of them,
    plus random repeats, when there are fewer), their ``(y, x)`` divided by the canvas size and sampled
    bilinearly (``align_corners=True``, in float32) from the token grid. The draw is random, as in X-SAM;
    pass a seeded CPU ``generator`` for reproducible tokens.
    """

    def __init__(self, num_points: int):
        super().__init__()
        self.num_points = num_points

    def forward(
        self, token_grid: torch.Tensor, prompt_masks: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``token_grid`` ``(h, w, D)`` and boolean ``prompt_masks`` ``(N, S, S)`` -> region tokens ``(N, D)``."""
        grid = token_grid.permute(2, 0, 1)[None].float()
        canvas = torch.tensor(prompt_masks.shape[-2:], device=prompt_masks.device, dtype=torch.float32)
        tokens = []
        for index, mask in enumerate(prompt_masks):
            pixels = mask.nonzero()
            if len(pixels) == 0:
                raise ValueError(f"prompt {index}: the mask has no pixel left at the model's input resolution")
            points = pixels[self._draw(len(pixels), generator).to(pixels.device)].float() / canvas
            sample_grid = (points.flip(-1) * 2 - 1)[None, None]  # (1, 1, P, 2) as (x, y) in [-1, 1]
            sampled = F.grid_sample(grid, sample_grid, mode="bilinear", align_corners=True)  # (1, D, 1, P)
            tokens.append(sampled[0, :, 0].amax(dim=-1))
        return torch.stack(tokens).to(token_grid.dtype)

    def _draw(self, count: int, generator: torch.Generator | None) -> torch.Tensor:
        """Indices of the sampled pixels, drawn on the CPU so one seed gives the same tokens on any device."""
        if count >= self.num_points:
            return torch.randperm(count, generator=generator)[: self.num_points]
        repeats = torch.randint(count, (self.num_points - count,), generator=generator)
        return torch.cat([torch.arange(count), repeats])
