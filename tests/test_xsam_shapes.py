"""Shapes of every stage of the spec's tensor flow (§1.1): the full-size model on the meta device (no memory, no
compute), the stages meta tensors cannot run on real but cheap tensors, and the tiny model end to end."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.initialization import no_init_weights

from xsam import XSam, XSamConfig, XSamProcessor
from xsam.input_embeddings import assemble_inputs_embeds
from xsam.region_sampler import XSamRegionSampler
from xsam.tasks import SEG_ANSWER, visual_prompt_instruction
from xsam.testing_utils import make_tiny_model

FULL = XSamConfig()


def meta(*shape: int) -> torch.Tensor:
    return torch.empty(*shape, device="meta")


@pytest.fixture(scope="module")
def full_on_meta():
    with torch.device("meta"), no_init_weights():
        return XSam(FULL).eval().to("meta")


def test_full_size_config_is_the_published_model():
    assert FULL.num_siglip_tokens == 729 and FULL.num_sam_tokens == 1024
    assert FULL.num_image_tokens == 1753
    assert int(4096 - (384 / 14) ** 2 - FULL.num_sam_tokens) == 2319  # X-SAM's text budget (max_length)
    assert FULL.decoder_config.num_queries == 200 and FULL.decoder_config.decoder_layers - 1 == 9
    assert FULL.pyramid_channels == [512, 1024, 2048]
    assert FULL.text_config.hidden_size == 3072 and FULL.text_config.num_hidden_layers == 32


def test_full_size_parameter_counts_match_the_spec(full_on_meta):
    def millions(module: nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    assert millions(full_on_meta.llm) == pytest.approx(3821, rel=0.01)
    assert millions(full_on_meta.visual_encoder) == pytest.approx(428, rel=0.01)
    assert millions(full_on_meta.segmentor.encoder) == pytest.approx(308, rel=0.01)
    assert millions(full_on_meta.segmentor.pixel_decoder) == pytest.approx(6.1, rel=0.05)
    assert millions(full_on_meta.segmentor.decoder) == pytest.approx(14.5, rel=0.05)
    assert millions(full_on_meta.seg_connector) == pytest.approx(10.5, rel=0.05)
    assert millions(full_on_meta.visual_projector) == pytest.approx(13.0, rel=0.05)
    assert millions(full_on_meta.seg_projector) == pytest.approx(22.0, rel=0.05)
    assert millions(full_on_meta.llm_projector) == pytest.approx(0.85, rel=0.05)
    assert millions(full_on_meta) / 1e3 == pytest.approx(4.62, rel=0.01)


@torch.inference_mode()
def test_full_size_image_branches(full_on_meta):
    siglip_hidden = full_on_meta.visual_encoder(meta(1, 3, 384, 384), output_hidden_states=True).hidden_states
    assert len(siglip_hidden) == 28 and siglip_hidden[-2].shape == (1, 729, 1152)
    assert full_on_meta.encode_siglip(meta(1, 3, 384, 384)).shape == (1, 729, 3072)

    sam_hidden = full_on_meta.segmentor.encoder(meta(1, 3, 1024, 1024), output_hidden_states=True).hidden_states
    assert len(sam_hidden) == 25 and all(h.shape == (1, 64, 64, 1024) for h in sam_hidden)
    features = full_on_meta.encode_sam(meta(1, 3, 1024, 1024))
    assert features.llm_tokens.shape == (1, 1024, 3072)
    assert [tuple(p.shape) for p in features.pyramid] == [(1, 512, 128, 128), (1, 1024, 64, 64), (1, 2048, 32, 32)]


@torch.inference_mode()
def test_full_size_decoder(full_on_meta):
    pyramid = [meta(1, 512, 128, 128), meta(1, 1024, 64, 64), meta(1, 2048, 32, 32)]
    pixels = full_on_meta.segmentor.pixel_decoder(pyramid)
    assert pixels.mask_features.shape == (1, 256, 128, 128)
    assert [tuple(f.shape) for f in pixels.multi_scale_features] == [
        (1, 256, 32, 32),
        (1, 256, 64, 64),
        (1, 256, 128, 128),
    ]
    num_classes = 3
    out = full_on_meta.decode(pyramid, meta(1, 256), meta(1, num_classes, 256))
    assert out.class_logits.shape == (1, 200, num_classes + 1)
    assert out.mask_logits.shape == (1, 200, 128, 128)
    assert out.query_states.shape == (1, 200, 256)


@torch.inference_mode()
def test_full_size_region_tokens_and_condition_projection():
    sam_llm_tokens = torch.randn(32, 32, 3072)
    masks = torch.zeros(3, 1024, 1024, dtype=torch.bool)
    masks[0, 100:400, 200:300] = True
    masks[1, 10, 10] = True
    masks[2, 500:900:7, 500:900:5] = True
    assert XSamRegionSampler(FULL.num_region_points)(sam_llm_tokens, masks).shape == (3, 3072)  # one token per prompt


def test_one_image_sentinel_expands_to_1753_positions_siglip_first():
    image_id, region_id = FULL.image_token_index, FULL.region_token_index
    input_ids = torch.tensor([1, 5, image_id, 7, 8, region_id, 9, region_id, 10])
    phrase_ids = torch.tensor([-1, -1, -1, -1, 0, 0, 0, 1, 1])
    image_tokens = torch.cat([torch.full((729, 4), 1.0), torch.full((1024, 4), 2.0)])  # SigLIP, then SAM
    regions = torch.tensor([[7.0] * 4, [8.0] * 4])
    out = assemble_inputs_embeds(input_ids, phrase_ids, nn.Embedding(16, 4), image_tokens, regions, image_id, region_id)
    assert out.inputs_embeds.shape == (1, len(input_ids) - 1 + 1753, 4)
    embeds = out.inputs_embeds[0]
    assert (embeds[2:731] == 1).all() and (embeds[731:1755] == 2).all()
    region_rows = (out.source_positions == 5) | (out.source_positions == 7)
    assert region_rows.sum() == 2  # one token per region
    torch.testing.assert_close(embeds[region_rows], regions)
    assert out.phrase_ids[region_rows].tolist() == [0, 1]
    assert (out.phrase_ids[2:1755] == -1).all()


@torch.inference_mode()
def test_tiny_model_every_stage():
    model, tokenizer = make_tiny_model()
    config = model.config
    processor = XSamProcessor(tokenizer, config)
    features = model.encode_sam(torch.randn(1, 3, 128, 128))
    assert features.llm_tokens.shape == (1, config.num_sam_tokens, 64)
    assert [p.shape[1] for p in features.pyramid] == config.pyramid_channels
    siglip = model.encode_siglip(torch.randn(1, 3, 56, 56))
    assert siglip.shape == (1, config.num_siglip_tokens, 64)

    masks = torch.zeros(2, 128, 128, dtype=torch.bool)
    masks[0, :20, :20] = masks[1, 60:, 60:] = True
    regions = model.sample_regions(features.llm_tokens, masks)
    assert regions.shape == (2, 64)

    prompt = processor.text_inputs(visual_prompt_instruction(2), SEG_ANSWER)
    assert len(prompt.seg_positions) == 1
    inputs = model.assemble_inputs(
        prompt.input_ids, prompt.phrase_ids, torch.cat([siglip[0], features.llm_tokens[0]]), regions
    )
    assert inputs.inputs_embeds.shape[1] == len(prompt.input_ids) - 1 + config.num_image_tokens
    states = model.language_states(inputs.inputs_embeds)[0]
    seg = int((inputs.source_positions == prompt.seg_positions[0]).nonzero()[0])
    embeddings = model.prompt_embeddings(states, inputs.phrase_ids, seg)
    assert embeddings.conditions.shape == (2, 32) and embeddings.seg_embedding.shape == (32,)

    out = model.decode(features.pyramid, embeddings.seg_embedding[None], embeddings.conditions[None])
    assert out.class_logits.shape == (1, 200, 3)
    assert out.mask_logits.shape == (1, 200, 16, 16)
