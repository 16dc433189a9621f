"""Convert the official X-SAM ``pytorch_model.bin`` into this implementation's layout.

    python -m xsam.convert pytorch_model.bin OUT_DIR --tokenizer microsoft/Phi-3-mini-4k-instruct

writes ``OUT_DIR/model.safetensors`` (renamed keys, see :data:`xsam.checkpoint.KEY_MAPPING`), ``config.json``
(sizes read from the weights) and, with ``--tokenizer``, Phi-3's tokenizer plus X-SAM's ``<SEG>``, ``<p>``,
``</p>``. The result loads with ``XSamPredictor.from_pretrained(OUT_DIR)``. Validation runs against a model
built on the meta device, so no memory is spent on a second copy of the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer
from transformers.initialization import no_init_weights

from xsam.checkpoint import (
    SAFETENSORS_NAME,
    CheckpointError,
    check_state,
    config_for_official_state,
    map_official_state,
    read_official_checkpoint,
    resolve_local_path,
)
from xsam.configuration_xsam import XSamConfig
from xsam.constants import SPECIAL_TOKENS
from xsam.modeling_xsam import XSamModel

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def convert(
    checkpoint: str | Path,
    output_dir: str | Path,
    tokenizer: str | None = None,
    dtype: torch.dtype = torch.bfloat16,
    base_config: XSamConfig | None = None,
) -> Path:
    """Convert an official ``.bin`` into ``output_dir``; raises :class:`CheckpointError` on any key problem."""
    source = resolve_local_path(checkpoint)
    official = read_official_checkpoint(source)
    config = config_for_official_state(official, base_config)
    state = map_official_state(official, str(source))
    with no_init_weights(), torch.device("meta"):
        expected = {k: v.shape for k, v in XSamModel(config).state_dict().items()}
    check_state(expected, {k: v.shape for k, v in state.items()}, str(source))

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        save_tokenizer(tokenizer, config.text_config.vocab_size, output)
    config.save_pretrained(str(output))
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(output / SAFETENSORS_NAME), {"format": "pt"})
    return output


def save_tokenizer(name_or_path: str, vocab_size: int, output: Path) -> None:
    """Phi-3's tokenizer with X-SAM's special tokens appended; their ids must be the checkpoint's last rows."""
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_local_path(name_or_path)))
    tokenizer.add_tokens([t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()], special_tokens=True)
    if len(tokenizer) != vocab_size:
        raise CheckpointError(
            f"{name_or_path}: the tokenizer has {len(tokenizer)} tokens with X-SAM's, the checkpoint's embedding "
            f"{vocab_size} rows; <SEG>/<p>/</p> would get the wrong rows. Use Phi-3-mini-4k-instruct's tokenizer."
        )
    tokenizer.save_pretrained(str(output))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xsam.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="official pytorch_model.bin (path or owner/repo/path/in/repo)")
    parser.add_argument("output_dir")
    parser.add_argument("--tokenizer", help="Phi-3-mini-4k-instruct tokenizer (directory or hub id)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="stored weight dtype")
    parser.add_argument("--config", help="an X-SAM config.json to start from (default: the published model's)")
    args = parser.parse_args(argv)
    try:
        base = XSamConfig.from_json_file(args.config) if args.config else None
        output = convert(args.checkpoint, args.output_dir, args.tokenizer, DTYPES[args.dtype], base)
    except (CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {output / SAFETENSORS_NAME} and {output / 'config.json'}")
    if args.tokenizer is None:
        print("note: no --tokenizer given; add Phi-3's tokenizer with <SEG>, <p>, </p> before using the predictor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
