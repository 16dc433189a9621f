"""Checkpoint loading: the official key layout, strictness, pickle safety, our safetensors export and the converter."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.initialization import no_init_weights

from xsam import CheckpointError, XSam, XSamConfig, XSamPredictor
from xsam.checkpoint import (
    KEY_MAPPING,
    UNUSED_OFFICIAL_PREFIXES,
    official_state_dict,
    official_to_ours,
    ours_to_official,
    resolve_local_path,
)
from xsam.convert import main as convert_main
from xsam.testing_utils import make_tiny_model

#: Prefixes of the official archive-branch checkpoint (spec §4 and X-SAM's ``XSamModel.state_dict``).
OFFICIAL_PREFIXES = (
    "llm.model.",
    "llm.lm_head.",
    "visual_encoder.vision_model.",
    "segmentor.encoder.",
    "segmentor.pixel_decoder.",
    "segmentor.decoder.",
    "segmentor.logit_scale",
    "seg_connector.model.",
    "visual_projector.model.",
    "seg_projector.model.",
    "llm_projector.model.",
    "bg_embeds.weight",
)


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = make_tiny_model(seed=1)
    return model, tokenizer


def _save_official(model, directory: Path, state: dict | None = None) -> Path:
    """What X-SAM's checkpoint hook writes, plus an X-SAM config.json beside it (the tiny model is not the default)."""
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(directory))
    path = directory / "pytorch_model.bin"
    torch.save(official_state_dict(model) if state is None else state, path)
    return path


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_key_of_the_full_size_model_maps_to_the_official_layout_and_back():
    with torch.device("meta"), no_init_weights():
        keys = list(XSam(XSamConfig()).state_dict())
    official = [ours_to_official(k) for k in keys]
    assert None not in official
    assert [official_to_ours(k) for k in official] == keys
    assert all(k.startswith(OFFICIAL_PREFIXES) for k in official)
    assert "segmentor.logit_scale" in official and "bg_embeds.weight" in official
    assert "seg_connector.model.2.model.5.weight" in official  # third branch's last LayerNorm
    assert "visual_encoder.vision_model.encoder.layers.26.mlp.fc2.weight" in official
    assert "llm.model.layers.31.self_attn.qkv_proj.weight" in official


def test_key_mapping_rows_do_not_overlap():
    for official, ours in KEY_MAPPING:
        probe = official.replace("{n}", "3") + ("weight" if official.endswith(".") else "")
        assert official_to_ours(probe) == ours.replace("{n}", "3") + ("weight" if ours.endswith(".") else "")


def test_official_layout_loads_with_no_missing_or_unexpected_key(tiny, tmp_path):
    model, _ = tiny
    state = official_state_dict(model)
    # Modules X-SAM builds but never uses at inference are in its state dict; they are accepted and dropped.
    state["segmentor.shared_image_embedding.positional_embedding"] = torch.randn(2, 16)
    state["segmentor.criterion.empty_weight"] = torch.ones(3)
    loaded = XSam.from_pretrained(_save_official(model, tmp_path, state), device="cpu")
    assert _same_weights(model, loaded)
    assert all(
        k.startswith(UNUSED_OFFICIAL_PREFIXES) for k in set(state) - {ours_to_official(k) for k in loaded.state_dict()}
    )


def test_vocabulary_size_comes_from_the_checkpoint_embedding(tiny, tmp_path):
    model, _ = tiny
    path = _save_official(model, tmp_path)
    config = XSamConfig.from_pretrained(str(tmp_path))
    config.text_config.vocab_size = 32014  # the published model's; the weights say otherwise
    config.save_pretrained(str(tmp_path))
    loaded = XSam.from_pretrained(path, device="cpu")
    rows = model.llm.get_input_embeddings().weight.shape[0]
    assert loaded.config.text_config.vocab_size == rows != 32014


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        # renamed inside a known prefix: the model's key is missing and the new one unexpected
        (
            lambda s: s.update(
                {"segmentor.decoder.level_embedding.weight": s.pop("segmentor.decoder.level_embed.weight")}
            ),
            [
                "missing key(s): segmentor.decoder.level_embed.weight",
                "unexpected key(s): segmentor.decoder.level_embedding.weight",
            ],
        ),
        # renamed outside every row of the mapping table
        (
            lambda s: s.update({"bg_embed.weight": s.pop("bg_embeds.weight")}),
            ["unexpected key(s) not in the X-SAM key mapping: bg_embed.weight"],
        ),
        # dropped
        (lambda s: s.pop("llm.model.norm.weight"), ["missing key(s): llm.model.norm.weight"]),
        (
            lambda s: s.pop("seg_connector.model.1.model.3.bias"),
            ["missing key(s): seg_connector.branches.1.layer_norm2.bias"],
        ),
        # wrong shape
        (
            lambda s: s.update({"llm_projector.model.2.bias": torch.zeros(7)}),
            ["shape mismatch(es): llm_projector.linear_2.bias (checkpoint (7,), model (32,))"],
        ),
    ],
)
def test_a_bad_key_fails_the_load_and_is_named(tiny, tmp_path, edit, named):
    model, _ = tiny
    state = official_state_dict(model)
    edit(state)
    path = _save_official(model, tmp_path, state)
    with pytest.raises(CheckpointError) as info:
        XSam.from_pretrained(path, device="cpu")
    message = str(info.value)
    assert str(path) in message
    for text in named:
        assert text in message


class _WritesAFile:
    """Unpickling this calls ``Path.touch``: what a malicious checkpoint would do with ``os.system``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_bin_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin"
    torch.save({"llm.model.norm.weight": torch.ones(2), "payload": _WritesAFile(marker)}, path)

    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*refused to unpickle") as info:
        XSam.from_pretrained(path, device="cpu")
    assert "weights_only=True" in str(info.value)
    assert not marker.exists()

    pickle.loads(pickle.dumps(_WritesAFile(marker)))  # control: a plain unpickle does run the payload
    assert marker.exists()


def test_a_truncated_bin_is_named_not_a_traceback(tiny, tmp_path):
    path = _save_official(tiny[0], tmp_path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": not a readable PyTorch checkpoint"):
        XSam.from_pretrained(path, device="cpu")


def test_safetensors_export_round_trips(tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = XSam.from_pretrained(tmp_path, device="cpu")
    assert _same_weights(model, loaded)
    assert loaded.segmentor.class_head.logit_scale.dtype == torch.float32


def test_bfloat16_keeps_the_segmentation_head_in_float32(tiny, tmp_path):
    model, _ = tiny
    model.save_pretrained(tmp_path)
    loaded = XSam.from_pretrained(tmp_path, device="cpu", dtype=torch.bfloat16)
    assert loaded.llm.get_input_embeddings().weight.dtype == torch.bfloat16
    assert loaded.segmentor.encoder.patch_embed.projection.weight.dtype == torch.bfloat16
    for name in ("pixel_decoder", "decoder", "class_head"):
        assert {p.dtype for p in getattr(loaded.segmentor, name).parameters()} == {torch.float32}


def test_converter_turns_an_official_bin_into_a_loadable_folder(tiny, tmp_path):
    model, tokenizer = tiny
    official = _save_official(model, tmp_path / "official")
    tokenizer_dir = tmp_path / "phi3-tokenizer"
    tokenizer.save_pretrained(str(tokenizer_dir))
    out = tmp_path / "converted"

    status = convert_main(
        [
            str(official),
            str(out),
            "--tokenizer",
            str(tokenizer_dir),
            "--dtype",
            "float32",
            "--config",
            str(tmp_path / "official" / "config.json"),
        ]
    )

    assert status == 0
    predictor = XSamPredictor.from_pretrained(out, device="cpu")
    assert _same_weights(model, predictor.model)
    image = np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)
    assert len(predictor.predict(image, "referring", text="the dog").masks) == 1


def test_converter_refuses_a_tokenizer_that_misplaces_the_special_tokens(tiny, tmp_path, capsys):
    model, tokenizer = tiny
    official = _save_official(model, tmp_path / "official")
    tokenizer = copy.deepcopy(tokenizer)  # the module's fixture stays as it was for other tests
    tokenizer.add_tokens(["<extra>"])  # one more token shifts <SEG>, <p>, </p> off their trained rows
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    status = convert_main(
        [
            str(official),
            str(tmp_path / "out"),
            "--tokenizer",
            str(tmp_path / "tok"),
            "--config",
            str(tmp_path / "official" / "config.json"),
        ]
    )
    assert status == 2
    assert "wrong rows" in capsys.readouterr().err


def test_unreachable_hub_id_fails_with_a_clear_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match="someone/no-such-xsam: not a local path, and the Hugging Face Hub"):
        resolve_local_path("someone/no-such-xsam")
    with pytest.raises(CheckpointError, match="no such file or directory"):
        XSam.from_pretrained("./missing/checkpoint")
