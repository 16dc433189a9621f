"""Where X-SAM reuses transformers, the same weights give transformers' outputs (float32, 1e-5); X-SAM's own
pieces (pixel shuffle, region sampler, class head, SEG-conditioned decoder) are checked against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    Mask2FormerConfig,
    SamVisionModel,
    SiglipVisionModel,
)
from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoder, Mask2FormerTransformerModule

from xsam.class_head import XSamClassHead
from xsam.pixel_shuffle import pixel_shuffle, pixel_shuffle_channels_first
from xsam.region_sampler import XSamRegionSampler
from xsam.testing_utils import make_tiny_model

ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return make_tiny_model(seed=2)[0]


@torch.inference_mode()
def test_siglip_branch_is_transformers_siglip_penultimate_layer(model, tmp_path):
    model.visual_encoder.save_pretrained(tmp_path)
    reference = SiglipVisionModel.from_pretrained(tmp_path).eval()
    pixels = torch.randn(1, 3, 56, 56)
    hidden = reference(pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == model.config.siglip_config.num_hidden_layers + 1
    expected = model.visual_projector(hidden[-2])
    torch.testing.assert_close(model.encode_siglip(pixels), expected, atol=ATOL, rtol=0)


@torch.inference_mode()
def test_sam_branch_is_transformers_sam_hidden_states(model):
    reference = SamVisionModel(model.config.sam_config).eval()
    reference.vision_encoder.load_state_dict(model.segmentor.encoder.state_dict())
    pixels = torch.randn(1, 3, 128, 128)
    hidden = reference(pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == model.config.sam_config.num_hidden_layers + 1
    features = model.encode_sam(pixels, with_llm_tokens=True)
    torch.testing.assert_close(features.llm_tokens, model.seg_projector(hidden[-2]), atol=ATOL, rtol=0)
    expected_pyramid = model.seg_connector([hidden[i] for i in model.config.sam_pyramid_layers])
    for ours, expected in zip(features.pyramid, expected_pyramid, strict=True):
        torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


@torch.inference_mode()
def test_language_states_are_transformers_phi3_final_hidden_states(model, tmp_path):
    model.llm.save_pretrained(tmp_path)
    reference = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    embeds = torch.randn(1, 23, model.config.text_config.hidden_size)
    expected = reference(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(model.language_states(embeds), expected, atol=ATOL, rtol=0)


def _pyramid(model):
    return [torch.randn(1, c, s, s) for c, s in zip(model.config.pyramid_channels, (16, 8, 4), strict=True)]


@torch.inference_mode()
def test_pixel_decoder_is_transformers_mask2former_pixel_decoder(model):
    reference = Mask2FormerPixelDecoder(model.config.decoder_config, model.config.pyramid_channels).eval()
    reference.load_state_dict(model.segmentor.pixel_decoder.state_dict())
    pyramid = _pyramid(model)
    ours, expected = model.segmentor.pixel_decoder(pyramid), reference(pyramid)
    assert ours.mask_features.shape == (1, model.config.decoder_config.mask_feature_size, 16, 16)
    torch.testing.assert_close(ours.mask_features, expected.mask_features, atol=ATOL, rtol=0)


@torch.inference_mode()
def test_mask_decoder_is_mask2former_with_seg_embedding_added_to_every_query(model):
    config: Mask2FormerConfig = model.config.decoder_config
    ours = model.segmentor.decoder
    reference = Mask2FormerTransformerModule(config.feature_size, config).eval()
    reference.load_state_dict(ours.state_dict())
    features = model.segmentor.pixel_decoder(_pyramid(model))
    inputs = (features.multi_scale_features, features.mask_features)

    plain = ours(*inputs)
    expected = reference(*inputs)
    torch.testing.assert_close(plain.masks_queries_logits[-1], expected.masks_queries_logits[-1], atol=ATOL, rtol=0)

    seg = torch.randn(1, config.hidden_dim)
    conditioned = ours(*inputs, seg_embedding=seg)
    reference.queries_features.weight.add_(seg)  # X-SAM: queries_features.weight + seg_embeds, for every query
    expected = reference(*inputs)
    for a, b in zip(conditioned.intermediate_hidden_states, expected.intermediate_hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    assert len(conditioned.masks_queries_logits) == config.decoder_layers  # initial prediction + 9 (here 3) layers
    assert not torch.allclose(conditioned.masks_queries_logits[-1], plain.masks_queries_logits[-1])


def _internvl_pixel_shuffle(x, scale_factor=0.5):
    """InternVL's reference implementation, the one X-SAM copied (its n, w, h, c naming kept)."""
    n, w, h, c = x.size()
    x = x.view(n, w, int(h * scale_factor), int(c / scale_factor))
    x = x.permute(0, 2, 1, 3).contiguous()
    x = x.view(n, int(h * scale_factor), int(w * scale_factor), int(c / (scale_factor * scale_factor)))
    return x.permute(0, 2, 1, 3).contiguous()


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_pixel_shuffle_matches_the_reference_order(scale):
    x = torch.randn(2, 8, 6, 16)
    torch.testing.assert_close(pixel_shuffle(x, scale), _internvl_pixel_shuffle(x, scale), atol=0, rtol=0)


def test_pixel_shuffle_folds_each_2x2_neighbourhood_in_row_major_channel_blocks():
    sam_tokens = torch.randn(1, 64, 64, 1024)
    folded = pixel_shuffle(sam_tokens, 0.5)
    assert folded.shape == (1, 32, 32, 4096)
    for out_row, out_col in [(0, 0), (5, 17), (31, 31)]:
        blocks = folded[0, out_row, out_col].view(4, 1024)
        for block, (dy, dx) in zip(blocks, [(0, 0), (0, 1), (1, 0), (1, 1)], strict=True):
            torch.testing.assert_close(block, sam_tokens[0, 2 * out_row + dy, 2 * out_col + dx], atol=0, rtol=0)
    channels_first = torch.randn(1, 2048, 64, 64)
    assert pixel_shuffle_channels_first(channels_first, 2.0).shape == (1, 512, 128, 128)


def test_region_sampler_pools_one_token_per_prompt():
    sampler = XSamRegionSampler(num_points=256)
    grid = torch.randn(4, 4, 8)
    corner = torch.zeros(1, 32, 32, dtype=torch.bool)
    corner[0, 0, 0] = True  # (y, x) = (0, 0) samples exactly grid node (0, 0) with align_corners=True
    torch.testing.assert_close(sampler(grid, corner)[0], grid[0, 0])

    big = torch.zeros(2, 32, 32, dtype=torch.bool)
    big[0, 2:30, 2:30] = True  # 784 pixels: 256 are drawn
    big[1, 5:9, 5:9] = True  # 16 pixels: all used, so the result does not depend on the draw
    draw = lambda seed: sampler(grid, big, torch.Generator().manual_seed(seed))  # noqa: E731
    tokens = draw(0)
    assert tokens.shape == (2, 8)
    torch.testing.assert_close(draw(0), tokens, atol=0, rtol=0)
    assert not torch.equal(draw(1)[0], tokens[0])
    torch.testing.assert_close(draw(1)[1], tokens[1], atol=0, rtol=0)
    points = big[1].nonzero().float() / 32
    samples = F.grid_sample(grid.permute(2, 0, 1)[None], (points.flip(-1) * 2 - 1)[None, None], align_corners=True)
    torch.testing.assert_close(tokens[1], samples[0, :, 0].amax(-1))


def test_class_head_is_scaled_cosine_with_background_last_clamp_and_padding():
    head = XSamClassHead(4, clamp=500.0, padded_logit=-1e9)
    queries = torch.tensor([[[1.0, 0, 0, 0], [0, 2.0, 0, 0]]])
    classes = torch.tensor([[[3.0, 0, 0, 0], [0, 0, 1.0, 0]]])
    logits = head(queries, classes, class_mask=torch.tensor([[True, False]]))
    scale = math.exp(head.logit_scale.item())
    assert logits.shape == (1, 2, 3)
    assert logits[0, 0, 0].item() == pytest.approx(scale)  # cos = 1
    assert logits[0, 1, 0].item() == pytest.approx(0.0)
    assert (logits[0, :, 1] == -1e9).all()  # padded class
    background = F.cosine_similarity(queries[0], head.background.weight, dim=-1) * scale
    torch.testing.assert_close(logits[0, :, 2], background)
    with torch.no_grad():
        head.logit_scale.fill_(10.0)  # exp(10) ~ 22026 -> clamped
    assert head(queries, classes)[0, 0, 0].item() == 500.0
