"""LLM input assembly: sentinel ids in the token sequence are replaced by image and region embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class AssembledInputs:
    """The LLM's input sequence after expansion.

    inputs_embeds: ``(1, L', D)``.
    phrase_ids: ``(L',)`` index of the ``<p>...</p>`` span (condition) each position belongs to, -1 elsewhere.
    source_positions: ``(L',)`` position in the un-expanded token sequence each embedding came from.
    """

    inputs_embeds: torch.Tensor
    phrase_ids: torch.Tensor
    source_positions: torch.Tensor


def assemble_inputs_embeds(
    input_ids: torch.Tensor,
    phrase_ids: torch.Tensor,
    embed_tokens: nn.Embedding,
    image_tokens: torch.Tensor | None,
    region_tokens: torch.Tensor | None,
    image_token_index: int,
    region_token_index: int,
) -> AssembledInputs:
    """Expand ``(L,)`` ``input_ids`` holding sentinels into LLM input embeddings.

    Each ``image_token_index`` becomes all ``image_tokens`` ``(T, D)`` (X-SAM: SigLIP's 729 then SAM's 1024);
    the k-th ``region_token_index`` becomes ``region_tokens[k]`` and, as in X-SAM, belongs to condition k.
    Every other id goes through the LLM's ``embed_tokens``.
    """
    is_image = input_ids == image_token_index
    is_region = input_ids == region_token_index
    num_regions = int(is_region.sum())
    if is_image.any() and image_tokens is None:
        raise ValueError("the prompt has an <image> but no image tokens were given")
    num_tokens = 0 if region_tokens is None else len(region_tokens)
    if num_regions != num_tokens:
        raise ValueError(f"the prompt has {num_regions} <region> slots for {num_tokens} region tokens")

    lengths = torch.where(is_image, len(image_tokens) if image_tokens is not None else 1, 1)
    source_positions = torch.repeat_interleave(torch.arange(len(input_ids), device=input_ids.device), lengths)
    expanded_ids = input_ids[source_positions]
    inputs_embeds = embed_tokens(expanded_ids.clamp(min=0))
    expanded_phrase_ids = phrase_ids[source_positions].clone()

    image_slots = expanded_ids == image_token_index
    if image_slots.any():
        inputs_embeds[image_slots] = image_tokens.to(inputs_embeds.dtype).repeat(int(is_image.sum()), 1)
    region_slots = expanded_ids == region_token_index
    if num_regions:
        inputs_embeds[region_slots] = region_tokens.to(inputs_embeds.dtype)
        expanded_phrase_ids[region_slots] = torch.arange(num_regions, device=input_ids.device)
    return AssembledInputs(inputs_embeds[None], expanded_phrase_ids, source_positions)
