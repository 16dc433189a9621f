"""InternVL-style pixel shuffle, the exact reshape order X-SAM was trained with (``model/utils/pixel_shuffle.py``).

The order matters: a different (equally valid-looking) reshape permutes channels and silently
breaks the trained projector and connector weights.
"""

from __future__ import annotations

import torch


def pixel_shuffle(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Rescale a channels-last map ``(B, H, W, C)`` to ``(B, H*scale, W*scale, C/scale**2)``.

    ``scale`` < 1 folds space into channels (0.5: 2x2 neighbours become one 4C token), > 1 unfolds it.
    Steps: view (B,H,W*s,C/s) -> permute (B,W*s,H,C/s) -> view (B,W*s,H*s,C/s^2) -> permute (B,H*s,W*s,C/s^2).
    """
    batch, height, width, channels = x.shape
    x = x.reshape(batch, height, int(width * scale), int(channels / scale))
    x = x.permute(0, 2, 1, 3)
    x = x.reshape(batch, int(width * scale), int(height * scale), int(channels / (scale * scale)))
    return x.permute(0, 2, 1, 3).contiguous()


def pixel_shuffle_channels_first(x: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`pixel_shuffle` for ``(B, C, H, W)`` maps (the connector's layout)."""
    return pixel_shuffle(x.permute(0, 2, 3, 1), scale).permute(0, 3, 1, 2)
