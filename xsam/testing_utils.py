"""A tiny X-SAM checkpoint built locally (no downloads): random weights, a word-level tokenizer shaped like Phi-3's.

Used by the tests and the benchmark, and handy to try the pipeline without the 9 GB model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from xsam.configuration_xsam import XSamConfig
from xsam.constants import SPECIAL_TOKENS
from xsam.modeling_xsam import XSamModel

PHI3_CHAT_TOKENS = ("<|user|>", "<|assistant|>", "<|end|>", "<|system|>")
_WORDS = (
    "can you segment the image based on following regions categories please output corresponding segmentation "
    "mask masks identify and in this sure it is what where describe person car dog cat sky road tree grass "
    "building water bird boat a of with red blue left right man woman"
).split()


def make_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with Phi-3's chat and BOS/EOS tokens, plus X-SAM's ``<SEG>``, ``<p>``, ``</p>``."""
    specials = ["<unk>", "<s>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(specials + list(dict.fromkeys(_WORDS)) + list("?,.:!"))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(PHI3_CHAT_TOKENS)})
    tokenizer.add_tokens(list(SPECIAL_TOKENS), special_tokens=True)  # as X-SAM does on Phi-3's tokenizer
    return tokenizer


def make_tiny_model(seed: int = 0) -> tuple[XSamModel, PreTrainedTokenizerFast]:
    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(seed)
    config = XSamConfig.tiny(vocab_size=len(tokenizer))
    config.text_config.bos_token_id = tokenizer.bos_token_id
    config.text_config.eos_token_id = tokenizer.eos_token_id
    return XSamModel(config).eval(), tokenizer


def make_tiny_checkpoint(directory: str | Path, seed: int = 0) -> Path:
    """Save a tiny model and its tokenizer in ``directory`` (loadable by ``XSamPredictor.from_pretrained``)."""
    model, tokenizer = make_tiny_model(seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(str(directory))
    return Path(directory)
