"""What X-SAM's cached per-frame path (``XSamPredictor.segment``) costs against the full path.

    python -m bench.xsam_bench [--skip-full] [--repeats 5] [--dtype bfloat16]

Prints one JSON document, then a table. Two parts:

* tiny: the few-MB test model end to end on a 480x640 frame (best wall time of ``predict`` in teacher-forced
  VGD mode, which runs everything, against ``segment`` with a cached prompt memory), and its networks alone;
* full: the published architecture with random weights (timings do not depend on weight values), one forward
  per component. The 27/24/32-layer towers are timed on one layer of each kind and scaled by their layer
  count; the rest runs whole. Analytic FLOPs (2 per multiply-add) are given per component for the same shapes.

On a GPU pass ``--device cuda``; the default is the CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
from transformers import AutoModel, SiglipVisionModel
from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoder
from transformers.models.sam.modeling_sam import SamVisionEncoder

from xsam import XSamConfig, XSamPredictor
from xsam.class_head import XSamClassHead
from xsam.connector import XSamSegConnector
from xsam.mask_decoder import XSamMaskDecoder
from xsam.projector import XSamProjector
from xsam.region_sampler import XSamRegionSampler
from xsam.tasks import SEG_ANSWER, visual_prompt_instruction
from xsam.testing_utils import make_tiny_checkpoint

#: Text tokens of a 1-prompt teacher-forced VGD prompt with the Phi-3 tokenizer (template + answer), roughly.
TEXT_TOKENS = 60
NUM_PROMPTS = 1
CACHED = ("sam_encoder", "seg_connector", "pixel_decoder", "mask_decoder")
FULL_ONLY = ("siglip", "visual_projector", "seg_projector", "region_sampler", "llm_prefill", "llm_projector")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Best of ``repeats`` runs after a warm-up: on a shared machine the minimum is the least noisy estimate."""
    fn()  # warm-up: lazy inits, allocator, kernels
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


# --- tiny model, end to end ---------------------------------------------------------------------------------------


def bench_tiny(repeats: int, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        predictor = XSamPredictor.from_pretrained(make_tiny_checkpoint(directory), device=device)
    frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    prompt = np.zeros(frame.shape[:2], bool)
    prompt[100:300, 200:400] = True
    memory = predictor.encode_prompts(frame, [prompt])
    full = _best_seconds(lambda: predictor.predict(frame, "vgd", prompt_masks=[prompt]), repeats, device)
    cached = _best_seconds(lambda: predictor.segment(frame, memory), repeats, device)
    # Four streams' keyframes in one pass, as a segmenter actor batches them.
    batch = _best_seconds(lambda: predictor.segment_batch([frame] * 4, [memory] * 4), repeats, device) / 4
    encode = _best_seconds(lambda: predictor.encode_prompts(frame, [prompt]), repeats, device)

    # The networks alone, without pre/post-processing at frame resolution.
    model, processor = predictor.model, predictor.processor
    sam_pixels = processor.sam_inputs(frame).pixel_values.to(device)
    siglip_pixels = processor.siglip_inputs(frame).to(device)
    text = processor.text_inputs(visual_prompt_instruction(1), SEG_ANSWER)
    canvas_mask = processor.prompt_masks([prompt]).to(device)
    seg, conditions = torch.from_numpy(memory.seg_embedding)[None], torch.from_numpy(memory.conditions)[None]
    with torch.inference_mode():
        full_net = _best_seconds(
            lambda: model(
                sam_pixels, siglip_pixels, text.input_ids, text.phrase_ids, text.seg_positions[0], canvas_mask
            ),
            repeats,
            device,
        )
        cached_net = _best_seconds(
            lambda: model.decode(model.encode_sam(sam_pixels, with_llm_tokens=False).pyramid, seg, conditions),
            repeats,
            device,
        )
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "frame": list(frame.shape[:2]),
        "full_path_ms": round(full * 1e3, 2),
        "cached_segment_ms": round(cached * 1e3, 2),
        "speedup": round(full / cached, 2),
        "cached_segment_batch_of_4_ms_per_frame": round(batch * 1e3, 2),
        "batch_of_4_speedup": round(cached / batch, 2),
        "full_networks_ms": round(full_net * 1e3, 2),
        "cached_networks_ms": round(cached_net * 1e3, 2),
        "speedup_networks": round(full_net / cached_net, 2),
        "encode_prompts_ms": round(encode * 1e3, 2),
        "memory_bytes": memory.nbytes(),
    }


# --- full-size architecture, per component --------------------------------------------------------------------------


@contextmanager
def _layer_timer(layers: list[torch.nn.Module], device: torch.device):
    """Records each listed layer's forward time (hooks), to split a tower's time into per-layer and the rest."""
    spent: dict[int, float] = {}
    started: dict[int, float] = {}

    def pre(module, _):
        _sync(device)
        started[id(module)] = time.perf_counter()

    def post(module, *_):
        _sync(device)
        spent[id(module)] = time.perf_counter() - started[id(module)]

    handles = [h for layer in layers for h in (layer.register_forward_pre_hook(pre), layer.register_forward_hook(post))]
    try:
        yield spent
    finally:
        for handle in handles:
            handle.remove()


def _tower_seconds(
    model: torch.nn.Module,
    run: Callable[[torch.nn.Module], object],
    layers: list[torch.nn.Module],
    layer_counts: list[int],
    device: torch.device,
    repeats: int,
) -> float:
    """Time a tower built with one layer of each kind and scale it: rest + sum(count * that layer's time).

    Best of ``repeats`` estimates after a warm-up.
    """
    run(model)
    estimates = []
    for _ in range(repeats):
        with _layer_timer(layers, device) as spent:
            _sync(device)
            start = time.perf_counter()
            run(model)
            _sync(device)
            total = time.perf_counter() - start
        per_layer = [spent[id(layer)] for layer in layers]
        estimates.append(total - sum(per_layer) + sum(n * t for n, t in zip(layer_counts, per_layer, strict=True)))
    return min(estimates)


def _with(config, **changes):
    """A copy of a transformers config with some fields changed."""
    return type(config)(**{**config.to_dict(), **changes})


def _build(factory: Callable[[], torch.nn.Module], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return factory().to(device=device, dtype=dtype).eval()


@torch.inference_mode()
def bench_full(config: XSamConfig, device: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    """Seconds per component for one 1024x1024 SAM canvas and a ~1.8k-token LLM prefill."""
    text = config.text_config
    sam_cfg, siglip_cfg, decoder_cfg = config.sam_config, config.siglip_config, config.decoder_config
    seconds: dict[str, float] = {}

    siglip = _build(lambda: SiglipVisionModel(_with(siglip_cfg, num_hidden_layers=1)), device, dtype)
    pixels = torch.randn(1, 3, siglip_cfg.image_size, siglip_cfg.image_size, device=device, dtype=dtype)
    seconds["siglip"] = _tower_seconds(
        siglip,
        lambda m: m(pixels, output_hidden_states=True),
        list(siglip.encoder.layers),
        [siglip_cfg.num_hidden_layers],
        device,
        repeats,
    )

    sam = _build(lambda: SamVisionEncoder(_with(sam_cfg, num_hidden_layers=2, global_attn_indexes=[1])), device, dtype)
    canvas = torch.randn(1, 3, sam_cfg.image_size, sam_cfg.image_size, device=device, dtype=dtype)
    num_global = len(sam_cfg.global_attn_indexes)
    seconds["sam_encoder"] = _tower_seconds(
        sam,
        lambda m: m(canvas, output_hidden_states=True),
        list(sam.layers),
        [sam_cfg.num_hidden_layers - num_global, num_global],
        device,
        repeats,
    )

    grid = sam_cfg.image_size // sam_cfg.patch_size
    hidden = [torch.randn(1, grid, grid, sam_cfg.hidden_size, device=device, dtype=dtype) for _ in range(3)]
    connector = _build(lambda: XSamSegConnector(sam_cfg.hidden_size, config.connector_config), device, dtype)
    seconds["seg_connector"] = _best_seconds(lambda: connector(hidden), repeats, device)
    pyramid = [level.float() for level in connector(hidden)]

    seg_projector = _build(
        lambda: XSamProjector(
            sam_cfg.hidden_size, text.hidden_size, downsample_ratio=config.sam_token_downsample_ratio
        ),
        device,
        dtype,
    )
    seconds["seg_projector"] = _best_seconds(lambda: seg_projector(hidden[0]), repeats, device)
    sam_tokens = seg_projector(hidden[0])
    visual_projector = _build(lambda: XSamProjector(siglip_cfg.hidden_size, text.hidden_size), device, dtype)
    siglip_hidden = torch.randn(1, config.num_siglip_tokens, siglip_cfg.hidden_size, device=device, dtype=dtype)
    seconds["visual_projector"] = _best_seconds(lambda: visual_projector(siglip_hidden), repeats, device)

    side = int(config.num_sam_tokens**0.5)
    masks = torch.zeros(NUM_PROMPTS, sam_cfg.image_size, sam_cfg.image_size, dtype=torch.bool, device=device)
    masks[:, 200:600, 300:700] = True
    sampler = XSamRegionSampler(config.num_region_points)
    seconds["region_sampler"] = _best_seconds(
        lambda: sampler(sam_tokens[0].view(side, side, -1), masks), repeats, device
    )

    llm = _build(lambda: AutoModel.from_config(_with(text, num_hidden_layers=1)), device, dtype)
    length = config.num_image_tokens + TEXT_TOKENS + NUM_PROMPTS
    embeds = torch.randn(1, length, text.hidden_size, device=device, dtype=dtype)
    seconds["llm_prefill"] = _tower_seconds(
        llm,
        lambda m: m(inputs_embeds=embeds, use_cache=False),
        list(llm.layers),
        [text.num_hidden_layers],
        device,
        repeats,
    )
    llm_projector = _build(lambda: XSamProjector(text.hidden_size, decoder_cfg.hidden_dim), device, dtype)
    positions = torch.randn(3 * NUM_PROMPTS + 1, text.hidden_size, device=device, dtype=dtype)
    seconds["llm_projector"] = _best_seconds(lambda: llm_projector(positions), repeats, device)

    # The segmentation head runs in float32 whatever the model dtype (see XSamSegmentor).
    pixel_decoder = _build(lambda: Mask2FormerPixelDecoder(decoder_cfg, config.pyramid_channels), device, torch.float32)
    seconds["pixel_decoder"] = _best_seconds(lambda: pixel_decoder(pyramid), max(1, repeats // 2), device)
    decoded = pixel_decoder(pyramid)
    mask_decoder = _build(lambda: XSamMaskDecoder(decoder_cfg.feature_size, decoder_cfg), device, torch.float32)
    class_head = _build(lambda: XSamClassHead(decoder_cfg.hidden_dim, 500.0, -1e9), device, torch.float32)
    seg = torch.randn(1, decoder_cfg.hidden_dim, device=device)
    classes = torch.randn(1, NUM_PROMPTS, decoder_cfg.hidden_dim, device=device)

    def decode():
        out = mask_decoder(decoded.multi_scale_features, decoded.mask_features, seg)
        return class_head(out.intermediate_hidden_states[-1].transpose(0, 1), classes)

    seconds["mask_decoder"] = _best_seconds(decode, repeats, device)
    return seconds


def analytic_flops(config: XSamConfig, text_tokens: int = TEXT_TOKENS, num_prompts: int = NUM_PROMPTS) -> dict:
    """FLOPs (2 per multiply-add) of one forward per component; attention counts full (not causal-halved) scores."""
    sam, siglip, text, dec = config.sam_config, config.siglip_config, config.text_config, config.decoder_config
    flops: dict[str, float] = {}

    def transformer(tokens: int, width: int, ffn: int, attended: int) -> float:
        return 2 * tokens * (4 * width * width + 2 * width * ffn) + 2 * 2 * tokens * attended * width

    n_sig = config.num_siglip_tokens
    flops["siglip"] = (
        2 * n_sig * 3 * siglip.patch_size** 2 * siglip.hidden_size
        + siglip.num_hidden_layers * transformer(n_sig, siglip.hidden_size, siglip.intermediate_size, n_sig)
    )

    grid = sam.image_size // sam.patch_size
    tokens, window = grid * grid, sam.window_size
    padded = (-(-grid // window) * window) ** 2  # windowed layers pad 64x64 to 70x70 for qkv, attention and proj
    attention_projections = lambda toks: 2 * toks * 4 * sam.hidden_size**2  # noqa: E731
    mlp = 2 * tokens * 2 * sam.hidden_size * sam.mlp_dim
    num_global = len(sam.global_attn_indexes)
    windowed_layer = attention_projections(padded) + 2 * 2 * padded * window**2 * sam.hidden_size + mlp
    global_layer = attention_projections(tokens) + 2 * 2 * tokens * tokens * sam.hidden_size + mlp
    flops["sam_encoder"] = (
        2 * tokens * 3 * sam.patch_size**2 * sam.hidden_size
        + (sam.num_hidden_layers - num_global) * windowed_layer
        + num_global * global_layer
        + 2 * tokens * (sam.hidden_size * sam.output_channels + 9 * sam.output_channels**2)  # neck (computed, unused)
    )

    hidden_channels = config.connector_config.hidden_channels
    flops["seg_connector"] = sum(
        2
        * tokens
        * (sam.hidden_size * hidden_channels + 9 * hidden_channels**2 + hidden_channels * sam.hidden_size * s)
        for s in config.connector_config.scale_factors
    )
    flops["seg_projector"] = 2 * config.num_sam_tokens * (4 * sam.hidden_size * text.hidden_size + text.hidden_size**2)
    flops["visual_projector"] = 2 * n_sig * (siglip.hidden_size * text.hidden_size + text.hidden_size**2)
    flops["region_sampler"] = num_prompts * config.num_region_points * text.hidden_size * 8  # bilinear taps + max

    length = config.num_image_tokens + text_tokens + num_prompts
    width, kv = text.hidden_size, text.hidden_size // text.num_attention_heads * text.num_key_value_heads
    llm_layer = 2 * length * (width * (width + 2 * kv) + width * width + 3 * width * text.intermediate_size)
    flops["llm_prefill"] = text.num_hidden_layers * (llm_layer + 2 * 2 * length * length * width)
    flops["llm_projector"] = 2 * (3 * num_prompts + 1) * (width * dec.hidden_dim + dec.hidden_dim**2)

    d, levels = dec.feature_size, [(grid // 2) ** 2, grid**2, (grid * 2) ** 2]  # 32², 64², 128²
    pixel_tokens = sum(levels)
    deformable = 2 * pixel_tokens * (2 * d * d + d * dec.num_attention_heads * 3 * 4 * 3)  # value/out + offsets/weights
    sampling = 2 * pixel_tokens * dec.num_attention_heads * 3 * 4 * (d // dec.num_attention_heads) * 4
    ffn = 2 * pixel_tokens * 2 * d * dec.encoder_feedforward_dim
    input_projections = 2 * sum(c * d * n for c, n in zip(reversed(config.pyramid_channels), levels, strict=True))
    fpn = 2 * levels[2] * (config.pyramid_channels[0] * d + 9 * d * d + d * dec.mask_feature_size)
    flops["pixel_decoder"] = dec.encoder_layers * (deformable + sampling + ffn) + input_projections + fpn

    queries, hidden = dec.num_queries, dec.hidden_dim
    masked_layers = dec.decoder_layers - 1
    cross = sum(
        2 * (2 * queries * hidden * hidden + 2 * levels[i % 3] * hidden * hidden + 2 * queries * levels[i % 3] * hidden)
        for i in range(masked_layers)
    )
    self_and_ffn = masked_layers * (
        2 * (4 * queries * hidden * hidden + 2 * queries * queries * hidden)
        + 2 * 2 * queries * hidden * dec.dim_feedforward
    )
    mask_heads = dec.decoder_layers * 2 * (3 * queries * hidden * hidden + queries * hidden * levels[2])
    flops["mask_decoder"] = cross + self_and_ffn + mask_heads + 2 * queries * (num_prompts + 1) * hidden
    return flops


def _summarize(seconds: dict, flops: dict) -> dict:
    cached_s = sum(seconds[k] for k in CACHED)
    full_s = cached_s + sum(seconds[k] for k in FULL_ONLY)
    cached_f = sum(flops[k] for k in CACHED)
    full_f = cached_f + sum(flops[k] for k in FULL_ONLY)
    return {
        "components": {
            k: {
                "seconds": round(seconds[k], 4),
                "gflops": round(flops[k] / 1e9, 2),
                "path": "cached+full" if k in CACHED else "full only",
            }
            for k in flops
        },
        "cached_path": {"seconds": round(cached_s, 3), "gflops": round(cached_f / 1e9, 1)},
        "full_path": {"seconds": round(full_s, 3), "gflops": round(full_f / 1e9, 1)},
        "speedup_measured": round(full_s / cached_s, 2),
        "speedup_flops": round(full_f / cached_f, 2),
    }


def _table(report: dict) -> str:
    lines = []
    if "tiny" in report:
        t = report["tiny"]
        lines += [
            f"tiny model ({t['parameters'] / 1e6:.2f} M params, {t['frame'][0]}x{t['frame'][1]} frame)"
            "            end to end   networks only",
            f"  full path (predict, teacher-forced VGD) {t['full_path_ms']:>9.1f} ms {t['full_networks_ms']:>9.1f} ms",
            f"  cached path (segment)                   {t['cached_segment_ms']:>9.1f} ms "
            f"{t['cached_networks_ms']:>9.1f} ms",
            f"  speedup                                 {t['speedup']:>9.2f}x   {t['speedup_networks']:>9.2f}x",
            f"  encode_prompts {t['encode_prompts_ms']:.1f} ms; prompt memory {t['memory_bytes']} B",
            "",
        ]
    if "full" in report:
        f = report["full"]
        lines += [
            f"full-size architecture, random weights, {f['device']} {f['dtype']} (segmentation head float32)",
            f"  {'component':<18}{'seconds':>10}{'GFLOPs':>12}  path",
        ]
        for name, c in f["components"].items():
            lines.append(f"  {name:<18}{c['seconds']:>10.3f}{c['gflops']:>12.1f}  {c['path']}")
        lines += [
            f"  {'cached path':<18}{f['cached_path']['seconds']:>10.2f}{f['cached_path']['gflops']:>12.0f}",
            f"  {'full path':<18}{f['full_path']['seconds']:>10.2f}{f['full_path']['gflops']:>12.0f}",
            f"  speedup: x{f['speedup_measured']} measured, x{f['speedup_flops']} by FLOPs",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.xsam_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype",
        choices=("bfloat16", "float32"),
        default="bfloat16",
        help="dtype of the full-size towers (bfloat16 is ~3x faster on AVX512-BF16 CPUs)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-full", action="store_true", help="only the tiny model")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)

    report: dict = {"torch_threads": torch.get_num_threads(), "tiny": bench_tiny(args.repeats, device)}
    if not args.skip_full:
        config = XSamConfig()
        seconds = bench_full(config, device, dtype, max(1, args.repeats // 2))
        report["full"] = {
            "device": str(device),
            "dtype": args.dtype,
            "text_tokens": TEXT_TOKENS,
            "llm_sequence": config.num_image_tokens + TEXT_TOKENS + NUM_PROMPTS,
            **_summarize(seconds, analytic_flops(config)),
        }
    print(json.dumps(report, indent=2))
    print(_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
