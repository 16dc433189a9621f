"""The segmentor: SAM ViT encoder, Mask2Former pixel decoder and the conditioned mask decoder with its class head."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoder
from transformers.models.sam.modeling_sam import SamVisionEncoder
from transformers.utils import ModelOutput

from xsam.class_head import XSamClassHead
from xsam.configuration_xsam import XSamConfig
from xsam.mask_decoder import XSamMaskDecoder


@dataclass
class XSamSegmentationOutput(ModelOutput):
    """Last decoder layer's predictions.

    class_logits: ``(B, Q, C+1)``, the last class is background.
    mask_logits: ``(B, Q, h, w)`` at the pixel decoder's stride-4 resolution of the padded SAM canvas.
    query_states: ``(B, Q, D)`` LayerNormed query states (what the class head compares to the conditions).
    """

    class_logits: torch.Tensor | None = None
    mask_logits: torch.Tensor | None = None
    query_states: torch.Tensor | None = None


class XSamSegmentor(nn.Module):
    """Holds the modules under the checkpoint's ``segmentor.*`` prefix.

    The pixel decoder, decoder and class head always run in float32 (``keep_in_fp32``): the deformable
    attention's ``grid_sample`` and the 1e9-scale class masking need it, and they are ~20 M parameters.
    """

    keep_in_fp32 = ("pixel_decoder", "decoder", "class_head")

    def __init__(self, config: XSamConfig):
        super().__init__()
        self.encoder = SamVisionEncoder(config.sam_config)
        self.pixel_decoder = Mask2FormerPixelDecoder(config.decoder_config, feature_channels=config.pyramid_channels)
        self.decoder = XSamMaskDecoder(in_features=config.decoder_config.feature_size, config=config.decoder_config)
        self.class_head = XSamClassHead(
            config.decoder_config.hidden_dim, config.class_logit_clamp, config.padded_class_logit
        )

    def decode(
        self,
        pyramid: list[torch.Tensor],
        seg_embedding: torch.Tensor,
        class_embeddings: torch.Tensor,
        class_mask: torch.Tensor | None = None,
    ) -> XSamSegmentationOutput:
        """Masks and class logits from the connector's pyramid (highest resolution first) and the LLM's embeddings.

        ``seg_embedding`` ``(B, D)`` conditions every query; ``class_embeddings`` ``(B, C, D)`` are the classes.
        """
        pyramid = [level.float() for level in pyramid]
        pixel_outputs = self.pixel_decoder(pyramid)
        decoder_outputs = self.decoder(
            multi_scale_features=pixel_outputs.multi_scale_features,
            mask_features=pixel_outputs.mask_features,
            seg_embedding=seg_embedding.float(),
        )
        query_states = decoder_outputs.intermediate_hidden_states[-1].transpose(0, 1)
        return XSamSegmentationOutput(
            class_logits=self.class_head(query_states, class_embeddings.float(), class_mask),
            mask_logits=decoder_outputs.masks_queries_logits[-1],
            query_states=query_states,
        )
