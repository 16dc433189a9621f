"""X-SAM configuration: one composite config holding the five sub-models' configs.

Defaults reproduce the published Phi-3 checkpoint (X-SAM ``AAAI26_Archive`` branch, spec §1):
SigLIP2-so400m/14 at 384 px, SAM ViT-L at 1024 px, Phi-3-mini-4k-instruct and a Mask2Former
decoder with 200 queries. :meth:`XSamConfig.tiny` is a few-MB model of the same shape for tests.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, Mask2FormerConfig, PreTrainedConfig, SamVisionConfig, SiglipVisionConfig
from transformers.configuration_utils import SubConfigSpec

#: ``facebook/sam-vit-large`` vision tower; its neck is kept (it is in the checkpoint) but unused.
SAM_VIT_LARGE = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "global_attn_indexes": [5, 11, 17, 23],
    "image_size": 1024,
    "patch_size": 16,
    "window_size": 14,
}

#: ``google/siglip2-so400m-patch14-384`` vision tower (fixed resolution, so the SigLIP architecture).
SIGLIP2_SO400M_384 = {
    "hidden_size": 1152,
    "intermediate_size": 4304,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "image_size": 384,
    "patch_size": 14,
}

#: ``microsoft/Phi-3-mini-4k-instruct`` with the vocabulary grown by ``<SEG>``, ``<p>``, ``</p>``
#: (32011 + 3 rows); loading an official checkpoint overrides ``vocab_size`` with its embedding's shape.
PHI3_MINI_4K = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32014,
    "max_position_embeddings": 4096,
    "original_max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "sliding_window": 2047,
    "bos_token_id": 1,
    "eos_token_id": 32000,
    "pad_token_id": 32000,
}

#: The decoder half of ``facebook/mask2former-swin-large-coco-panoptic`` (``decoder_layers`` 10 = 9 masked layers).
MASK2FORMER_SWIN_L_DECODER = {
    "num_queries": 200,
    "decoder_layers": 10,
    "encoder_layers": 6,
    "hidden_dim": 256,
    "feature_size": 256,
    "mask_feature_size": 256,
    "num_attention_heads": 8,
    "dim_feedforward": 2048,
    "encoder_feedforward_dim": 1024,
    "common_stride": 4,
    "feature_strides": [4, 8, 16, 32],
}


@strict
class XSamConnectorConfig(PreTrainedConfig):
    """The segmentation connector: one conv branch per decoder level, rescaling SAM's 1/16 map by ``scale_factors``.

    ``bias`` is off in the published model (``ConnectorConfig.bias`` defaults to False and X-SAM never sets it);
    loading reads it from the checkpoint, so a checkpoint with biases still loads exactly.
    """

    model_type = "xsam_connector"
    base_config_key = "connector_config"

    hidden_channels: int = 512
    scale_factors: list[float] | tuple[float, ...] = (2.0, 1.0, 0.5)
    bias: bool = False
    layer_norm_eps: float = 1e-6


@strict
class XSamConfig(PreTrainedConfig):
    """Configuration of :class:`~xsam.modeling_xsam.XSamModel`.

    Layer indices count like transformers' ``hidden_states`` tuples (index 0 is the patch embedding).
    """

    model_type = "xsam"
    sub_configs_defaults = {
        "sam_config": SubConfigSpec(SamVisionConfig, init_kwargs=SAM_VIT_LARGE),
        "siglip_config": SubConfigSpec(SiglipVisionConfig, init_kwargs=SIGLIP2_SO400M_384),
        "text_config": SubConfigSpec(AutoConfig, model_type="phi3", init_kwargs=PHI3_MINI_4K),
        "connector_config": XSamConnectorConfig,
        "decoder_config": SubConfigSpec(Mask2FormerConfig, init_kwargs=MASK2FORMER_SWIN_L_DECODER),
    }

    sam_config: dict | PreTrainedConfig | None = None
    siglip_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    connector_config: dict | PreTrainedConfig | None = None
    decoder_config: dict | PreTrainedConfig | None = None

    #: SigLIP hidden state fed to the LLM: the penultimate layer, before the post-LayerNorm.
    siglip_feature_layer: int = -2
    #: SAM hidden state that becomes the LLM's 1024 "segmentation" image tokens.
    sam_token_layer: int = -2
    #: SAM hidden states that feed the connector, one per decoder level (stride 8, 16, 32 after rescaling).
    sam_pyramid_layers: list[int] | tuple[int, ...] = (12, 18, 24)
    #: Pixel-shuffle ratio applied to the SAM tokens before ``seg_projector`` (64x64x1024 -> 32x32x4096).
    sam_token_downsample_ratio: float = 0.5
    projector_hidden_act: str = "gelu"
    #: Mask pixels sampled per visual prompt before max-pooling them into one region token.
    num_region_points: int = 256
    image_token_index: int = -200
    region_token_index: int = -300
    #: Cosine class logits are clamped to this magnitude, padded classes set to ``padded_class_logit``.
    class_logit_clamp: float = 500.0
    padded_class_logit: float = -1e9
    #: Resampling filter of the SigLIP 384x384 resize (``preprocessor_config.json`` of the SigLIP2 tower).
    siglip_resample: str = "bilinear"
    #: Centre the image on a square of SigLIP's mean colour before that resize, as X-SAM's demo and evaluation
    #: do (``pad_image_to_square=True``, xtuner's ``expand2square``): the published model never saw a squashed image.
    siglip_pad_to_square: bool = True

    @property
    def num_siglip_tokens(self) -> int:
        return (self.siglip_config.image_size // self.siglip_config.patch_size) ** 2

    @property
    def num_sam_tokens(self) -> int:
        grid = self.sam_config.image_size // self.sam_config.patch_size
        return int(grid * self.sam_token_downsample_ratio) ** 2

    @property
    def num_image_tokens(self) -> int:
        """LLM positions one ``<image>`` expands to: SigLIP tokens first, then SAM tokens (729 + 1024 = 1753)."""
        return self.num_siglip_tokens + self.num_sam_tokens

    @property
    def pyramid_channels(self) -> list[int]:
        """Channels of the connector's outputs: pixel shuffle by ``s`` turns ``C*s`` channels into ``C/s``."""
        hidden = self.sam_config.hidden_size
        return [int(hidden / s) for s in self.connector_config.scale_factors]

    @classmethod
    def tiny(cls, vocab_size: int = 128) -> XSamConfig:
        """A model of the full one's shape (same token bookkeeping, 200 queries) that runs on CPU in milliseconds."""
        return cls(
            sam_config={
                "hidden_size": 32,
                "num_hidden_layers": 4,
                "num_attention_heads": 2,
                "global_attn_indexes": [1, 3],
                "image_size": 128,
                "patch_size": 16,
                "window_size": 4,
                "mlp_dim": 64,
                "output_channels": 16,
            },
            siglip_config={
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": 56,
                "patch_size": 14,
            },
            text_config={
                "model_type": "phi3",
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 4,
                "vocab_size": vocab_size,
                "max_position_embeddings": 512,
                "original_max_position_embeddings": 512,
                "sliding_window": None,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": None,
            },
            connector_config={"hidden_channels": 16},
            decoder_config={
                **MASK2FORMER_SWIN_L_DECODER,
                "decoder_layers": 4,
                "encoder_layers": 2,
                "hidden_dim": 32,
                "feature_size": 32,
                "mask_feature_size": 32,
                "num_attention_heads": 4,
                "dim_feedforward": 64,
                "encoder_feedforward_dim": 64,
            },
            sam_pyramid_layers=(2, 3, 4),
        )


__all__ = ["XSamConfig", "XSamConnectorConfig"]
