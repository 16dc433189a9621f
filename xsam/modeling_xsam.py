"""X-SAM: a Phi-3 LLM reading SigLIP and SAM tokens, whose ``<SEG>`` and phrase states drive a Mask2Former decoder.

Attribute names follow the official checkpoint (``llm``, ``visual_encoder``, ``segmentor.*``, ``seg_connector``,
``*_projector``) so that loading is a short, documented key mapping (:mod:`xsam.checkpoint`). Everything
transformers already implements is transformers' class; this file only wires them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel, SiglipVisionModel
from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoder
from transformers.utils import ModelOutput

from xsam.checkpoint import load_model, save_model
from xsam.configuration_xsam import XSamConfig
from xsam.connector import XSamSegConnector
from xsam.input_embeddings import AssembledInputs, assemble_inputs_embeds
from xsam.projector import XSamProjector
from xsam.region_sampler import XSamRegionSampler
from xsam.segmentor import XSamSegmentationOutput, XSamSegmentor


@dataclass
class XSamImageFeatures(ModelOutput):
    """What the SAM branch produces for one image.

    pyramid: connector outputs, highest resolution first (512@128², 1024@64², 2048@32² at full size).
    llm_tokens: ``(1, 1024, D_llm)`` SAM tokens in LLM space (``seg_projector``), only when asked for.
    """

    pyramid: list[torch.Tensor] | None = None
    llm_tokens: torch.Tensor | None = None


@dataclass
class XSamPromptEmbeddings(ModelOutput):
    """The LLM's answer to a prompt, in decoder space (``llm_projector`` applied).

    conditions: ``(C, D)`` one embedding per ``<p>...</p>`` span (mean over the span, tags included).
    seg_embedding: ``(D,)`` the state at the ``<SEG>`` token.
    """

    conditions: torch.Tensor | None = None
    seg_embedding: torch.Tensor | None = None


@dataclass
class XSamOutput(ModelOutput):
    """A teacher-forced forward pass: the segmentation plus what produced it."""

    segmentation: XSamSegmentationOutput | None = None
    prompt_embeddings: XSamPromptEmbeddings | None = None
    region_tokens: torch.Tensor | None = None


class XSamPreTrainedModel(PreTrainedModel):
    config: XSamConfig
    base_model_prefix = "xsam"
    main_input_name = "sam_pixel_values"

    def _init_weights(self, module: nn.Module) -> None:
        """Random init (tests, benchmarks); the pixel decoder's ``level_embed`` is allocated uninitialised."""
        if isinstance(module, Mask2FormerPixelDecoder):
            nn.init.normal_(module.level_embed)
        else:
            super()._init_weights(module)


class XSamModel(XSamPreTrainedModel):
    """The full X-SAM model (archive-branch semantics of the published checkpoint).

    The public methods are the stages of spec §1.1, so callers can cache the expensive ones: a video
    pipeline runs SigLIP and the LLM once per prompt and only :meth:`encode_sam` + :meth:`decode` per frame.
    """

    def __init__(self, config: XSamConfig):
        super().__init__(config)
        text, act = config.text_config, config.projector_hidden_act
        self.llm = AutoModelForCausalLM.from_config(text)
        self.visual_encoder = SiglipVisionModel(config.siglip_config)
        self.segmentor = XSamSegmentor(config)
        self.seg_connector = XSamSegConnector(config.sam_config.hidden_size, config.connector_config)
        self.visual_projector = XSamProjector(config.siglip_config.hidden_size, text.hidden_size, act)
        self.seg_projector = XSamProjector(
            config.sam_config.hidden_size, text.hidden_size, act, downsample_ratio=config.sam_token_downsample_ratio
        )
        self.llm_projector = XSamProjector(text.hidden_size, config.decoder_config.hidden_dim, act)
        self.region_sampler = XSamRegionSampler(config.num_region_points)
        self.post_init()

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> XSamModel:
        """Load a saved model or an official ``pytorch_model.bin``, strictly (see :mod:`xsam.checkpoint`).

        ``device`` defaults to CUDA when available, ``dtype`` to bfloat16 on CUDA and float32 on CPU.
        """
        return load_model(cls, path_or_hub_id, device=device, dtype=dtype)

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (this implementation's key names)."""
        save_model(self, save_directory)

    def set_inference_dtype(self, dtype: torch.dtype) -> XSamModel:
        """Cast to ``dtype``, keeping the segmentation head in float32 (see :class:`XSamSegmentor`)."""
        self.to(dtype)
        for name in XSamSegmentor.keep_in_fp32:
            getattr(self.segmentor, name).float()
        return self

    # --- image branches -------------------------------------------------------------------------------------------

    def encode_siglip(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(1, 3, 384, 384)`` -> ``(1, 729, D_llm)``: penultimate SigLIP layer through ``visual_projector``."""
        layer = self.config.siglip_feature_layer
        hidden_states = self.visual_encoder(pixel_values, output_hidden_states=[layer]).hidden_states
        return self.visual_projector(hidden_states[layer])

    def encode_sam(self, pixel_values: torch.Tensor, with_llm_tokens: bool = True) -> XSamImageFeatures:
        """One SAM ViT pass for both uses: the decoder pyramid and (optionally) the LLM's SAM tokens."""
        pyramid_layers = list(self.config.sam_pyramid_layers)
        layers = pyramid_layers + ([self.config.sam_token_layer] if with_llm_tokens else [])
        encoder = self.segmentor.encoder
        hidden_states = encoder(pixel_values.to(encoder.dtype), output_hidden_states=layers).hidden_states
        return XSamImageFeatures(
            pyramid=self.seg_connector([hidden_states[i] for i in pyramid_layers]),
            llm_tokens=self.seg_projector(hidden_states[self.config.sam_token_layer]) if with_llm_tokens else None,
        )

    def sample_regions(
        self, sam_llm_tokens: torch.Tensor, prompt_masks: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One region token ``(N, D_llm)`` per prompt mask ``(N, S, S)`` on the padded SAM canvas."""
        side = math.isqrt(sam_llm_tokens.shape[1])
        return self.region_sampler(sam_llm_tokens[0].view(side, side, -1), prompt_masks, generator)

    # --- language model ---------------------------------------------------------------------------------------------

    def assemble_inputs(
        self,
        input_ids: torch.Tensor,
        phrase_ids: torch.Tensor,
        image_tokens: torch.Tensor,
        region_tokens: torch.Tensor | None = None,
    ) -> AssembledInputs:
        """Token ids with ``<image>``/``<region>`` sentinels -> LLM input embeddings (:mod:`xsam.input_embeddings`)."""
        return assemble_inputs_embeds(
            input_ids,
            phrase_ids,
            self.llm.get_input_embeddings(),
            image_tokens,
            region_tokens,
            self.config.image_token_index,
            self.config.region_token_index,
        )

    def language_states(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """Teacher-forced pass: final-norm hidden states ``(1, L, D_llm)`` (no LM head, no KV cache)."""
        return self.llm.get_decoder()(inputs_embeds=inputs_embeds, use_cache=False).last_hidden_state

    def generate_states(
        self, inputs_embeds: torch.Tensor, max_new_tokens: int, eos_token_ids: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy generation. Returns the new token ids ``(T,)`` and the final-norm states ``(L + T - 1, D_llm)`` of
        the prompt plus every generated token fed back (the last one never is), as X-SAM's ``predict`` does."""
        outputs = self.llm.generate(
            inputs_embeds=inputs_embeds,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=eos_token_ids,
            pad_token_id=eos_token_ids[0],
            output_hidden_states=True,
            return_dict_in_generate=True,
        )
        states = torch.cat([step[-1] for step in outputs.hidden_states], dim=1)[0]
        return outputs.sequences[0], states

    def prompt_embeddings(
        self, states: torch.Tensor, phrase_ids: torch.Tensor, seg_position: int
    ) -> XSamPromptEmbeddings:
        """Project the states that matter to decoder space; a condition is its span's mean taken after projection.

        ``states`` ``(L, D_llm)`` and ``phrase_ids`` ``(L,)`` (-1 outside spans); conditions come in span order.
        """
        span_positions = (phrase_ids >= 0).nonzero()[:, 0]
        if len(span_positions) == 0:
            raise ValueError("the prompt has no <p>...</p> span to condition the segmentation on")
        seg = torch.tensor([seg_position], device=states.device)
        projected = self.llm_projector(states[torch.cat([span_positions, seg])])
        spans, span_ids = projected[:-1], phrase_ids[span_positions]
        conditions = torch.stack([spans[span_ids == k].mean(dim=0) for k in span_ids.unique()])
        return XSamPromptEmbeddings(conditions=conditions, seg_embedding=projected[-1])

    # --- decoder ------------------------------------------------------------------------------------------------------

    def decode(
        self,
        pyramid: list[torch.Tensor],
        seg_embedding: torch.Tensor,
        class_embeddings: torch.Tensor,
        class_mask: torch.Tensor | None = None,
    ) -> XSamSegmentationOutput:
        """Pixel decoder + conditioned mask decoder + class head. Shapes as :meth:`XSamSegmentor.decode`."""
        return self.segmentor.decode(pyramid, seg_embedding, class_embeddings, class_mask)

    def embed_prompt(
        self,
        sam_llm_tokens: torch.Tensor,
        siglip_pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        phrase_ids: torch.Tensor,
        seg_position: int,
        region_tokens: torch.Tensor | None = None,
    ) -> XSamPromptEmbeddings:
        """SigLIP + one teacher-forced LLM pass -> the prompt's conditions and ``<SEG>`` embedding.

        ``input_ids``/``phrase_ids`` are ``(L,)`` with sentinels and ``seg_position`` indexes the answer's
        ``<SEG>`` in ``input_ids``; ``region_tokens`` ``(R, D_llm)`` fill the ``<region>`` slots in order.
        """
        image_tokens = torch.cat([self.encode_siglip(siglip_pixel_values)[0], sam_llm_tokens[0]])
        inputs = self.assemble_inputs(input_ids, phrase_ids, image_tokens, region_tokens)
        states = self.language_states(inputs.inputs_embeds)[0]
        expanded_seg_position = int((inputs.source_positions == seg_position).nonzero()[0])
        return self.prompt_embeddings(states, inputs.phrase_ids, expanded_seg_position)

    def forward(
        self,
        sam_pixel_values: torch.Tensor,
        siglip_pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        phrase_ids: torch.Tensor,
        seg_position: int,
        prompt_masks: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> XSamOutput:
        """The full teacher-forced pass (X-SAM's benchmark "tensor" mode) for one image.

        Arguments as :meth:`embed_prompt`; ``prompt_masks`` ``(N, S, S)`` on the SAM canvas become the region tokens.
        """
        image = self.encode_sam(sam_pixel_values, with_llm_tokens=True)
        region_tokens = None if prompt_masks is None else self.sample_regions(image.llm_tokens, prompt_masks, generator)
        embeddings = self.embed_prompt(
            image.llm_tokens, siglip_pixel_values, input_ids, phrase_ids, seg_position, region_tokens
        )
        segmentation = self.decode(image.pyramid, embeddings.seg_embedding[None], embeddings.conditions[None])
        return XSamOutput(segmentation=segmentation, prompt_embeddings=embeddings, region_tokens=region_tokens)


__all__ = ["XSamModel", "XSamPreTrainedModel", "XSamOutput", "XSamImageFeatures", "XSamPromptEmbeddings"]
