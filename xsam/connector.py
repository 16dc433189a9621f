"""The segmentation connector: SAM's single-scale ViT features -> the pixel decoder's multi-scale pyramid."""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamLayerNorm

from xsam.configuration_xsam import XSamConnectorConfig
from xsam.pixel_shuffle import pixel_shuffle_channels_first


class XSamConnectorBranch(nn.Module):
    """Bottleneck 1x1 -> 3x3 -> 1x1 convs, each followed by SAM's channels-first LayerNorm, then a pixel shuffle.

    There are no activations (as trained). The last conv emits ``C*s`` channels so that shuffling by ``s``
    yields a ``(C/s, H*s, W*s)`` map: s=2 upsamples 64x64x1024 to 128x128x512, s=0.5 gives 32x32x2048.
    """

    def __init__(self, in_channels: int, scale: float, config: XSamConnectorConfig):
        super().__init__()
        self.scale = scale
        hidden, out_channels = config.hidden_channels, int(in_channels * scale)
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=config.bias)
        self.layer_norm1 = SamLayerNorm(hidden, eps=config.layer_norm_eps, data_format="channels_first")
        self.conv2 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, bias=config.bias)
        self.layer_norm2 = SamLayerNorm(hidden, eps=config.layer_norm_eps, data_format="channels_first")
        self.conv3 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=config.bias)
        self.layer_norm3 = SamLayerNorm(out_channels, eps=config.layer_norm_eps, data_format="channels_first")

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` SAM hidden state -> ``(B, C/s, H*s, W*s)``."""
        x = hidden_state.permute(0, 3, 1, 2)
        x = self.layer_norm1(self.conv1(x))
        x = self.layer_norm2(self.conv2(x))
        x = self.layer_norm3(self.conv3(x))
        return pixel_shuffle_channels_first(x, self.scale)


class XSamSegConnector(nn.Module):
    """One :class:`XSamConnectorBranch` per decoder level, highest resolution first."""

    def __init__(self, in_channels: int, config: XSamConnectorConfig):
        super().__init__()
        self.branches = nn.ModuleList(XSamConnectorBranch(in_channels, s, config) for s in config.scale_factors)

    def forward(self, hidden_states: list[torch.Tensor]) -> list[torch.Tensor]:
        return [branch(h) for branch, h in zip(self.branches, hidden_states, strict=True)]
