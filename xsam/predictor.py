"""Numpy-in, numpy-out X-SAM inference: every task on single images, plus the split a video pipeline needs.

Cost split (spec §7 of the X2SAM video brief): :meth:`XSamPredictor.encode_prompts` runs the expensive semantic
path once per prompt event (SAM + region sampler + SigLIP + one teacher-forced LLM pass) and returns a small
:class:`XSamPromptMemory`; :meth:`XSamPredictor.segment` then runs only SAM, the connector, the pixel decoder
and the mask decoder on each frame. :meth:`XSamPredictor.refresh` re-encodes on a keyframe from the model's
own confident masks while the user's region tokens stay pinned.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from xsam import postprocessing
from xsam.checkpoint import CheckpointError, resolve_local_path
from xsam.memory import XSamPromptMemory
from xsam.modeling_xsam import XSamModel, XSamPromptEmbeddings
from xsam.postprocessing import XSamPrediction
from xsam.processing_xsam import ImageGeometry, SamInputs, TextInputs, XSamProcessor, check_image
from xsam.segmentor import XSamSegmentationOutput
from xsam.tasks import (
    SEG_ANSWER,
    TASKS,
    GenericQuery,
    Task,
    generic_instruction,
    parse_generic_query,
    reasoning_instruction,
    referring_instruction,
    visual_prompt_instruction,
)


class XSamPredictor:
    """Runs an :class:`XSamModel` on numpy RGB ``uint8`` images and boolean masks under ``torch.inference_mode``.

    Region tokens are drawn from each prompt mask with a generator seeded by ``seed`` on every call, so the same
    image and masks always give the same tokens (X-SAM draws them at random).
    """

    def __init__(self, model: XSamModel, processor: XSamProcessor, seed: int = 0):
        self.model = model.eval()
        self.processor = processor
        self.seed = seed

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        seed: int = 0,
    ) -> XSamPredictor:
        """Model and tokenizer from one directory (``save_pretrained`` or ``python -m xsam.convert`` output), or an
        official ``.bin`` with the tokenizer files beside it."""
        path = resolve_local_path(path_or_hub_id)
        model = XSamModel.from_pretrained(path, device=device, dtype=dtype)
        tokenizer_dir = path if path.is_dir() else path.parent
        try:
            processor = XSamProcessor.from_pretrained(tokenizer_dir, model.config)
        except (OSError, ValueError) as error:
            raise CheckpointError(
                f"{tokenizer_dir}: no usable X-SAM tokenizer ({str(error).splitlines()[0]}); "
                "python -m xsam.convert IN.bin OUT_DIR --tokenizer <Phi-3 tokenizer> writes one"
            ) from None
        return cls(model, processor, seed)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # --- single images ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def predict(
        self,
        image: np.ndarray,
        task: Task = "vgd",
        *,
        prompt_masks: Sequence[np.ndarray] | np.ndarray | None = None,
        text: str | None = None,
        generate: bool = False,
        threshold: float = 0.5,
        max_new_tokens: int = 2048,
    ) -> XSamPrediction:
        """Segment (or answer about) one image.

        vgd: all instances of each prompt's kind, label = prompt index. interactive: one mask for one prompt.
        generic: ``text`` in X-SAM's ``ins: a, b; sem: c`` syntax, label = category index.
        referring / reasoning: ``text`` is the expression / question. chat: ``text`` is the question.
        ``generate=False`` is X-SAM's evaluation mode (one teacher-forced pass answering ``Sure, it is <SEG>.``);
        ``generate=True`` decodes greedily like its demo and returns the text, with masks only if the answer
        holds exactly one ``<SEG>``. Chat always generates.
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
        masks = self._check_prompt_masks(image, prompt_masks, task)
        if task in ("generic", "referring", "reasoning", "chat") and not text:
            raise ValueError(f"task {task!r} needs a text")
        generic = parse_generic_query(text) if task == "generic" else None
        if task in ("vgd", "interactive"):
            instruction = visual_prompt_instruction(len(masks))
        elif task == "generic":
            instruction = generic_instruction(list(generic.categories))
        elif task == "referring":
            instruction = referring_instruction(text)
        elif task == "reasoning":
            instruction = reasoning_instruction(text)
        else:
            instruction = text

        sam = self.processor.sam_inputs(image)
        canvas_masks = None if masks is None else self.processor.prompt_masks(masks).to(self.device)
        if generate or task == "chat":
            segmentation, answer = self._generate(
                image, sam, instruction, canvas_masks, max_new_tokens, segment=task != "chat"
            )
            if segmentation is None:
                return XSamPrediction.empty(sam.geometry.image_size, text=answer)
        else:
            prompt = self._text_inputs(instruction)
            output = self.model(
                self._to_device(sam.pixel_values),
                self._to_device(self.processor.siglip_inputs(image)),
                prompt.input_ids.to(self.device),
                prompt.phrase_ids.to(self.device),
                prompt.seg_positions[0],
                canvas_masks,
                self._generator(),
            )
            segmentation, answer = output.segmentation, None

        result = self._postprocess(task, segmentation, sam.geometry, threshold, generic, canvas_masks)
        result.text = answer
        return result

    # --- video: prompts once, frames cheaply --------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_prompts(
        self,
        image: np.ndarray,
        prompt_masks: Sequence[np.ndarray] | np.ndarray,
        prompt_ids: Sequence[int] | None = None,
    ) -> XSamPromptMemory:
        """Encode visual prompts drawn on ``image`` once: region tokens, then one teacher-forced LLM pass."""
        masks = self._check_prompt_masks(image, prompt_masks, "vgd")
        prompt_ids = tuple(range(len(masks))) if prompt_ids is None else tuple(int(p) for p in prompt_ids)
        if len(prompt_ids) != len(masks) or len(set(prompt_ids)) != len(prompt_ids):
            raise ValueError(f"need one distinct prompt id per mask, got {prompt_ids} for {len(masks)} masks")
        sam_tokens, region_tokens = self._region_tokens(image, self.processor.prompt_masks(masks))
        labels = torch.arange(len(masks))
        embeddings = self._embed_regions(image, sam_tokens, region_tokens)
        return self._memory(prompt_ids, region_tokens, labels, embeddings)

    def segment(self, image: np.ndarray, memory: XSamPromptMemory, threshold: float = 0.5) -> XSamPrediction:
        """VGD on one frame from cached prompts: SAM, connector, pixel decoder and mask decoder only.

        Labels are prompt ids; ``embeddings`` are the kept queries' decoder states (for association).
        """
        return self.segment_batch([image], [memory], threshold)[0]

    @torch.inference_mode()
    def segment_batch(
        self, images: Sequence[np.ndarray], memories: Sequence[XSamPromptMemory], threshold: float = 0.5
    ) -> list[XSamPrediction]:
        """:meth:`segment` for several frames at once (keyframes of several streams): one SAM pass and one
        decoder pass over the batch, where a GPU does most of its work per launch, not per image.

        Frames may differ in size (each keeps its own resize geometry); memories may hold different numbers
        of conditions, padded to the longest and masked out of the class head, as X-SAM pads its classes.
        """
        if len(images) != len(memories) or not images:
            raise ValueError(f"need one memory per image, got {len(images)} images and {len(memories)} memories")
        sams = [self.processor.sam_inputs(image) for image in images]
        features = self.model.encode_sam(self._to_device(torch.cat([s.pixel_values for s in sams])), with_llm_tokens=False)
        counts = [len(memory.conditions) for memory in memories]
        conditions = torch.zeros(len(memories), max(counts), memories[0].conditions.shape[1])
        class_mask = torch.zeros(len(memories), max(counts), dtype=torch.bool)
        for i, memory in enumerate(memories):
            conditions[i, : counts[i]] = torch.from_numpy(memory.conditions)
            class_mask[i, : counts[i]] = True
        seg_embeddings = torch.stack([torch.from_numpy(memory.seg_embedding) for memory in memories])
        segmentation = self.model.decode(
            features.pyramid, seg_embeddings.to(self.device), conditions.to(self.device), class_mask.to(self.device)
        )
        results = []
        for i, (memory, sam) in enumerate(zip(memories, sams)):
            own_classes = torch.cat([torch.arange(counts[i]), torch.tensor([-1])]).to(self.device)  # and background
            probs = postprocessing.class_probabilities(
                segmentation.class_logits[i][:, own_classes], torch.from_numpy(memory.region_labels)
            )
            result = postprocessing.instances(
                probs, segmentation.mask_logits[i], segmentation.query_states[i], sam.geometry, threshold
            )
            result.labels = np.asarray(memory.prompt_ids, np.int64)[result.labels]
            results.append(result)
        return results

    @torch.inference_mode()
    def refresh(
        self,
        image: np.ndarray,
        memory: XSamPromptMemory,
        masks: np.ndarray,
        scores: np.ndarray,
        prompt_ids: np.ndarray,
        min_score: float = 0.5,
    ) -> XSamPromptMemory:
        """Re-encode on a keyframe from the model's own confident masks, used as mask-type visual prompts.

        For each prompt id, its best mask scoring >= ``min_score`` becomes a new region token. The LLM then reads
        the user's pinned region tokens and the new ones together, so each prompt gets two conditions (summed at
        classification) and drift is bounded by the user's. Prompts without a confident mask keep only the
        user's token; with none at all the memory is returned unchanged.
        """
        chosen, labels = [], []
        for label, prompt_id in enumerate(memory.prompt_ids):
            candidates = np.flatnonzero((np.asarray(prompt_ids) == prompt_id) & (np.asarray(scores) >= min_score))
            if len(candidates):
                chosen.append(masks[candidates[np.argmax(np.asarray(scores)[candidates])]])
                labels.append(label)
        if not chosen:
            return memory
        canvas_masks = self.processor.prompt_masks(self._check_prompt_masks(image, chosen, "vgd"))
        visible = canvas_masks.flatten(1).any(1)  # a mask of a few pixels can vanish at the model's resolution
        if not visible.any():
            return memory
        sam_tokens, new_tokens = self._region_tokens(image, canvas_masks[visible])
        num_user = len(memory.prompt_ids)
        user_tokens = torch.from_numpy(memory.region_tokens[:num_user]).to(self.device, new_tokens.dtype)
        region_tokens = torch.cat([user_tokens, new_tokens])
        region_labels = torch.cat([torch.arange(num_user), torch.tensor(labels)[visible]])
        embeddings = self._embed_regions(image, sam_tokens, region_tokens)
        return self._memory(memory.prompt_ids, region_tokens, region_labels, embeddings)

    # --- internals ----------------------------------------------------------------------------------------------------

    def _region_tokens(self, image: np.ndarray, canvas_masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The SAM tokens in LLM space (``(1, T, D_llm)``) and one region token per mask on the SAM canvas."""
        sam = self.processor.sam_inputs(image)
        features = self.model.encode_sam(self._to_device(sam.pixel_values), with_llm_tokens=True)
        regions = self.model.sample_regions(features.llm_tokens, canvas_masks.to(self.device), self._generator())
        return features.llm_tokens, regions

    def _embed_regions(
        self, image: np.ndarray, sam_tokens: torch.Tensor, region_tokens: torch.Tensor
    ) -> XSamPromptEmbeddings:
        prompt = self._text_inputs(visual_prompt_instruction(len(region_tokens)))
        return self.model.embed_prompt(
            sam_tokens,
            self._to_device(self.processor.siglip_inputs(image)),
            prompt.input_ids.to(self.device),
            prompt.phrase_ids.to(self.device),
            prompt.seg_positions[0],
            region_tokens,
        )

    @staticmethod
    def _memory(
        prompt_ids: tuple[int, ...],
        region_tokens: torch.Tensor,
        region_labels: torch.Tensor,
        embeddings: XSamPromptEmbeddings,
    ) -> XSamPromptMemory:
        def to_numpy(tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().float().cpu().numpy()

        return XSamPromptMemory(
            prompt_ids=prompt_ids,
            region_tokens=to_numpy(region_tokens),
            region_labels=region_labels.long().numpy(),
            conditions=to_numpy(embeddings.conditions),
            seg_embedding=to_numpy(embeddings.seg_embedding),
        )

    def _text_inputs(self, instruction: str) -> TextInputs:
        prompt = self.processor.text_inputs(instruction, SEG_ANSWER)
        if len(prompt.seg_positions) != 1:
            raise ValueError(
                f"the teacher-forced prompt must hold exactly one <SEG>, found {len(prompt.seg_positions)}"
            )
        return prompt

    def _generate(
        self,
        image: np.ndarray,
        sam: SamInputs,
        instruction: str,
        canvas_masks: torch.Tensor | None,
        max_new_tokens: int,
        segment: bool = True,
    ) -> tuple[XSamSegmentationOutput | None, str]:
        """Demo-style greedy generation. Returns the segmentation and the text.

        The segmentation is None for chat (``segment=False``: the decoder is not run, whatever the answer holds)
        and where there is nothing to condition it on: not exactly one ``<SEG>``, or no ``<p>...</p>`` span.

        Conditions come from the prompt's spans unless the answer holds ``<p>...</p>`` spans (grounded captions),
        which then replace them, as in X-SAM's ``predict``.
        """
        features = self.model.encode_sam(self._to_device(sam.pixel_values), with_llm_tokens=True)
        regions = None
        if canvas_masks is not None:
            regions = self.model.sample_regions(features.llm_tokens, canvas_masks, self._generator())
        siglip_tokens = self.model.encode_siglip(self._to_device(self.processor.siglip_inputs(image)))
        prompt = self.processor.text_inputs(instruction, add_bos=False)  # X-SAM's demo adds no BOS
        inputs = self.model.assemble_inputs(
            prompt.input_ids.to(self.device),
            prompt.phrase_ids.to(self.device),
            torch.cat([siglip_tokens[0], features.llm_tokens[0]]),
            regions,
        )
        new_ids, states = self.model.generate_states(
            inputs.inputs_embeds, max_new_tokens, self.processor.stop_token_ids
        )
        answer = self.processor.decode(new_ids[~torch.isin(new_ids, torch.tensor(self.processor.stop_token_ids))])
        fed_back = new_ids[:-1].cpu()  # the last generated token is never fed back, so it has no state
        seg_positions = self.processor.seg_positions(fed_back)
        if not segment or len(seg_positions) != 1:
            return None, answer
        output_phrase_ids = self.processor.phrase_ids(fed_back).to(self.device)
        if (output_phrase_ids >= 0).any():
            phrase_ids = torch.cat([torch.full_like(inputs.phrase_ids, -1), output_phrase_ids])
        else:
            phrase_ids = torch.cat([inputs.phrase_ids, torch.full_like(output_phrase_ids, -1)])
        if not (phrase_ids >= 0).any():
            return None, answer
        prompt_length = inputs.inputs_embeds.shape[1]
        embeddings = self.model.prompt_embeddings(states, phrase_ids, prompt_length + seg_positions[0])
        segmentation = self.model.decode(features.pyramid, embeddings.seg_embedding[None], embeddings.conditions[None])
        return segmentation, answer

    def _postprocess(
        self,
        task: Task,
        segmentation: XSamSegmentationOutput,
        geometry: ImageGeometry,
        threshold: float,
        generic: GenericQuery | None,
        canvas_masks: torch.Tensor | None,
    ) -> XSamPrediction:
        class_logits, mask_logits = segmentation.class_logits[0], segmentation.mask_logits[0]
        query_states = segmentation.query_states[0]
        probs = postprocessing.class_probabilities(class_logits)
        if task == "vgd" or (task == "generic" and generic.kind == "instance"):
            return postprocessing.instances(probs, mask_logits, query_states, geometry, threshold)
        if task == "interactive":
            return postprocessing.interactive(probs, mask_logits, query_states, geometry, canvas_masks[0], threshold)
        if task in ("referring", "reasoning"):
            return postprocessing.referring(probs, mask_logits, query_states, geometry)
        if generic.kind == "panoptic":
            return postprocessing.panoptic(probs, mask_logits, geometry, generic.stuff, threshold)
        return postprocessing.semantic(probs, mask_logits, geometry)

    def _check_prompt_masks(self, image: np.ndarray, masks, task: str) -> list[np.ndarray] | None:
        check_image(image)
        if task not in ("vgd", "interactive"):
            if masks is not None:
                raise ValueError(f"task {task!r} takes no visual prompts")
            return None
        if masks is None or len(masks) == 0:
            raise ValueError(f"task {task!r} needs at least one prompt mask")
        if task == "interactive" and len(masks) != 1:
            raise ValueError(f"interactive segmentation takes exactly one prompt mask, got {len(masks)}")
        checked = []
        for index, mask in enumerate(masks):
            mask = np.asarray(mask)
            if mask.shape != image.shape[:2]:
                raise ValueError(f"prompt {index}: mask is {mask.shape}, the image is {image.shape[:2]}")
            if not mask.any():
                raise ValueError(f"prompt {index}: the mask is empty")
            checked.append(mask.astype(bool))
        return checked

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def _to_device(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pixel_values.to(self.device)
