"""The query-conditioned Mask2Former transformer decoder: the only change X-SAM makes to Mask2Former's."""

from __future__ import annotations

import torch
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoderOutput,
    Mask2FormerTransformerModule,
)


class XSamMaskDecoder(Mask2FormerTransformerModule):
    """Mask2Former's masked-attention decoder whose every query content is shifted by the ``<SEG>`` embedding.

    X-SAM adds the LLM's projected ``<SEG>`` state to all query features (``queries_features.weight + seg``);
    positions, levels, masked attention and the mask MLP are transformers' own.
    """

    def forward(
        self,
        multi_scale_features: list[torch.Tensor],
        mask_features: torch.Tensor,
        seg_embedding: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> Mask2FormerMaskedAttentionDecoderOutput:
        """``seg_embedding`` is ``(B, D)``; ``None`` gives plain Mask2Former."""
        multi_stage_features, multi_stage_positional_embeddings, size_list = [], [], []
        for level, features in enumerate(multi_scale_features[: self.num_feature_levels]):
            size_list.append(features.shape[-2:])
            position = self.position_embedder(features.shape, features.device, features.dtype, None)
            multi_stage_positional_embeddings.append(position.flatten(2).permute(2, 0, 1))
            level_features = self.input_projections[level](features).flatten(2)
            multi_stage_features.append(
                (level_features + self.level_embed.weight[level][None, :, None]).permute(2, 0, 1)
            )

        batch_size = multi_stage_features[0].shape[1]
        query_embeddings = self.queries_embedder.weight.unsqueeze(1).repeat(1, batch_size, 1)
        query_features = self.queries_features.weight.unsqueeze(1).repeat(1, batch_size, 1)
        if seg_embedding is not None:
            query_features = query_features + seg_embedding.to(query_features.dtype)[None]

        return self.decoder(
            inputs_embeds=query_features,
            multi_stage_positional_embeddings=multi_stage_positional_embeddings,
            pixel_embeddings=mask_features,
            encoder_hidden_states=multi_stage_features,
            query_position_embeddings=query_embeddings,
            feature_size_list=size_list,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
        )
