"""Inputs for X-SAM: SAM and SigLIP pixel values, prompt masks on the SAM canvas, and tokenized prompts.

Images go through transformers' PIL-backed SAM and SigLIP processors (the ones X-SAM's processors derive from);
prompts are tokenized the way X-SAM's ``encode_fn`` does: the text is split on ``<image>``/``<region>``, each
remaining chunk is encoded on its own and the markers become sentinel ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from xsam.configuration_xsam import XSamConfig
from xsam.constants import IMAGE_TOKEN, REGION_TOKEN, SPECIAL_TOKENS

#: xtuner's ``phi3_chat`` template with an empty system prompt; generation stops at ``<|end|>``.
PHI3_CHAT_TEMPLATE = "<|user|>\n{input}<|end|>\n<|assistant|>\n"
PHI3_STOP_TOKEN = "<|end|>"

_SENTINEL_SPLIT = re.compile(f"({re.escape(IMAGE_TOKEN)}|{re.escape(REGION_TOKEN)})")


@dataclass(frozen=True)
class ImageGeometry:
    """Where an image sits on the padded SAM canvas: resized to ``scaled_size`` at the top-left of ``canvas``²."""

    canvas: int
    scaled_size: tuple[int, int]
    image_size: tuple[int, int]


@dataclass
class SamInputs:
    pixel_values: torch.Tensor  # (1, 3, canvas, canvas)
    geometry: ImageGeometry


@dataclass
class TextInputs:
    """A tokenized prompt: ``input_ids`` with sentinels, the ``<p>...</p>`` span of each position, the ``<SEG>``s."""

    input_ids: torch.Tensor  # (L,)
    phrase_ids: torch.Tensor  # (L,), -1 outside spans
    seg_positions: list[int]


class XSamProcessor:
    """Turns numpy images, boolean prompt masks and instructions into :class:`~xsam.modeling_xsam.XSamModel` inputs."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: XSamConfig):
        missing = [t for t in SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(
                f"the tokenizer lacks X-SAM's special tokens {missing}; add them with "
                "tokenizer.add_tokens([...], special_tokens=True) (python -m xsam.convert does)"
            )
        self.tokenizer = tokenizer
        self.config = config
        canvas = config.sam_config.image_size
        self.sam_processor = SamImageProcessorPil(
            size={"longest_edge": canvas}, pad_size={"height": canvas, "width": canvas}
        )
        siglip_size = config.siglip_config.image_size
        self.siglip_processor = SiglipImageProcessorPil(
            size={"height": siglip_size, "width": siglip_size},
            resample=PILImageResampling[config.siglip_resample.upper()],
        )
        self.seg_token_id, self.phrase_start_id, self.phrase_end_id = tokenizer.convert_tokens_to_ids(
            list(SPECIAL_TOKENS)
        )
        stops = [tokenizer.get_vocab().get(PHI3_STOP_TOKEN), tokenizer.eos_token_id]
        self.stop_token_ids = list(dict.fromkeys(t for t in stops if t is not None))

    @classmethod
    def from_pretrained(cls, path: str | Path, config: XSamConfig) -> XSamProcessor:
        # Passing the config keeps AutoTokenizer from parsing our config.json as an unknown model type.
        return cls(AutoTokenizer.from_pretrained(str(path), config=config), config)

    # --- images ---------------------------------------------------------------------------------------------------

    def sam_inputs(self, image: np.ndarray) -> SamInputs:
        """Longest side to the canvas (bilinear), ImageNet normalisation, zero padding bottom/right."""
        encoded = self.sam_processor(images=check_image(image), return_tensors="pt")
        scaled = tuple(int(v) for v in encoded["reshaped_input_sizes"][0])
        geometry = ImageGeometry(self.config.sam_config.image_size, scaled, tuple(image.shape[:2]))
        return SamInputs(encoded["pixel_values"], geometry)

    def siglip_inputs(self, image: np.ndarray) -> torch.Tensor:
        """Padded to a square (``siglip_pad_to_square``), resized to SigLIP's input, mean/std 0.5: ``(1, 3, 384, 384)``."""
        image = check_image(image)
        if self.config.siglip_pad_to_square:
            fill = tuple(int(m * 255) for m in self.siglip_processor.image_mean)
            image = pad_to_square(image, fill)
        return self.siglip_processor(images=image, return_tensors="pt")["pixel_values"]

    def prompt_masks(self, masks: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        """Boolean ``(N, H, W)`` prompt masks -> ``(N, canvas, canvas)``: nearest resize as the image, zero padding."""
        canvas = self.config.sam_config.image_size
        resized = [
            self.sam_processor.resize(
                np.asarray(m, dtype=np.uint8)[None], SizeDict(longest_edge=canvas), resample=PILImageResampling.NEAREST
            )
            for m in masks
        ]
        padded = self.sam_processor.pad(resized, pad_size=SizeDict(height=canvas, width=canvas))
        return torch.from_numpy(np.concatenate(padded)).bool()

    # --- text -------------------------------------------------------------------------------------------------------

    def text_inputs(self, instruction: str, answer: str | None = None, add_bos: bool = True) -> TextInputs:
        """Tokenize ``<image>\\n{instruction}`` in the Phi-3 chat template, plus the teacher-forced ``answer``.

        X-SAM prepends BOS in training and evaluation (``add_bos``); its demo does not.
        """
        ids = [self.tokenizer.bos_token_id] if add_bos else []
        ids += self.encode(PHI3_CHAT_TEMPLATE.format(input=f"{IMAGE_TOKEN}\n{instruction}"))
        if answer is not None:
            ids += self.tokenizer.encode(answer, add_special_tokens=False)
        if len(ids) > self.text_budget:
            raise ValueError(
                f"the prompt is {len(ids)} tokens; X-SAM's text budget is {self.text_budget} (its context less the "
                "image tokens): shorten the text, or split the categories over several queries"
            )
        input_ids = torch.tensor(ids)
        return TextInputs(input_ids, self.phrase_ids(input_ids), self.seg_positions(input_ids))

    @property
    def text_budget(self) -> int:
        """Text tokens a prompt may hold: X-SAM's ``max_length``, the LLM's context less the image's tokens (2319).

        X-SAM truncates longer prompts, which cuts off the answer's ``<SEG>`` or silently drops categories;
        :meth:`text_inputs` refuses them instead.
        """
        siglip = self.config.siglip_config
        context = self.config.text_config.max_position_embeddings
        return int(context - (siglip.image_size / siglip.patch_size) ** 2 - self.config.num_sam_tokens)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with ``<image>``/``<region>`` as sentinel ids; whitespace-only chunks are dropped."""
        sentinels = {IMAGE_TOKEN: self.config.image_token_index, REGION_TOKEN: self.config.region_token_index}
        ids: list[int] = []
        for chunk in _SENTINEL_SPLIT.split(text):
            if chunk in sentinels:
                ids.append(sentinels[chunk])
            elif chunk.strip():
                ids += self.tokenizer.encode(chunk, add_special_tokens=False)
        return ids

    def phrase_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Index k of the k-th ``<p>...</p>`` span for each position in it (both tags included), -1 elsewhere."""
        starts = (input_ids == self.phrase_start_id).long().cumsum(0)
        ends = (input_ids == self.phrase_end_id).long().cumsum(0)
        inside = (starts > ends) | (input_ids == self.phrase_end_id)
        return torch.where(inside, starts - 1, -1)

    def seg_positions(self, token_ids: torch.Tensor) -> list[int]:
        return (token_ids == self.seg_token_id).nonzero()[:, 0].tolist()

    def decode(self, token_ids: torch.Tensor) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=False)


def pad_to_square(image: np.ndarray, fill: tuple[int, int, int]) -> np.ndarray:
    """``image`` centred on a ``fill``-coloured square of its longer side (the offset rounded down)."""
    height, width = image.shape[:2]
    side = max(height, width)
    if height == width:
        return image
    square = np.empty((side, side, 3), np.uint8)
    square[:] = fill
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = image
    return square


def check_image(image: np.ndarray) -> np.ndarray:
    """``image`` if it is an RGB ``uint8`` ``(H, W, 3)`` array, else a ValueError saying what it is."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an RGB uint8 (H, W, 3) numpy image, got {type(image).__name__} {shape}")
    return image
