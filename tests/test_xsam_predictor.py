"""The predictor on the tiny checkpoint: every task, both modes, and the cached video path."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from xsam import XSamPredictor, XSamPromptMemory
from xsam.tasks import parse_generic_query
from xsam.testing_utils import make_tiny_checkpoint

HEIGHT, WIDTH = 72, 120


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return XSamPredictor.from_pretrained(make_tiny_checkpoint(tmp_path_factory.mktemp("tiny")), device="cpu")


@pytest.fixture(scope="module")
def frame():
    return np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _mask(y0, y1, x0, x1):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y0:y1, x0:x1] = True
    return mask


PROMPTS = [_mask(5, 40, 10, 50), _mask(30, 70, 70, 115)]


class CallCounter:
    """Counts forward calls of modules through hooks: proof that a path ran (or not) a sub-model."""

    def __init__(self, **modules: torch.nn.Module):
        self.counts = dict.fromkeys(modules, 0)
        self._handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(*_):
            self.counts[name] += 1

        return hook

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for handle in self._handles:
            handle.remove()


def _counter(predictor):
    model = predictor.model
    # The LLM's transformer body runs in both the teacher-forced and the generation paths.
    return CallCounter(
        siglip=model.visual_encoder,
        llm=model.llm.get_decoder(),
        sam=model.segmentor.encoder,
        decoder=model.segmentor.decoder,
    )


def test_cached_path_equals_the_full_model_without_running_siglip_or_the_llm(predictor, frame):
    with _counter(predictor) as full:
        expected = predictor.predict(frame, "vgd", prompt_masks=PROMPTS, threshold=0.0)
    assert full.counts["siglip"] == 1 and full.counts["llm"] == 1
    memory = predictor.encode_prompts(frame, PROMPTS, prompt_ids=[0, 1])

    with _counter(predictor) as cached:
        result = predictor.segment(frame, memory, threshold=0.0)
    assert cached.counts == {"siglip": 0, "llm": 0, "sam": 1, "decoder": 1}

    assert len(result) == len(expected) > 0
    np.testing.assert_array_equal(result.masks, expected.masks)
    np.testing.assert_array_equal(result.labels, expected.labels)
    np.testing.assert_allclose(result.scores, expected.scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result.embeddings, expected.embeddings, rtol=1e-6, atol=1e-7)


def test_a_batch_of_frames_equals_each_frame_alone(predictor, frame):
    """Several streams' keyframes in one pass: frames of other sizes, memories with other prompt counts."""
    other = np.random.default_rng(4).integers(0, 256, (60, 96, 3), dtype=np.uint8)
    other_prompt = np.zeros((60, 96), bool)
    other_prompt[10:50, 20:70] = True
    memories = [predictor.encode_prompts(frame, PROMPTS, [7, 9]), predictor.encode_prompts(other, [other_prompt], [3])]
    assert len(memories[0].conditions) != len(memories[1].conditions)  # the batch pads one of them
    images = [frame, other, frame]
    memories.append(memories[0])
    batched = predictor.segment_batch(images, memories, threshold=0.0)
    for image, memory, together in zip(images, memories, batched):
        alone = predictor.segment(image, memory, threshold=0.0)
        assert len(alone.masks) > 0 and together.masks.shape == alone.masks.shape
        np.testing.assert_array_equal(together.labels, alone.labels)
        assert set(together.labels.tolist()) <= set(memory.prompt_ids)
        np.testing.assert_allclose(together.scores, alone.scores, atol=1e-5)
        assert np.mean(together.masks != alone.masks) < 1e-3
    with pytest.raises(ValueError, match="one memory per image"):
        predictor.segment_batch(images, memories[:2])


def test_vgd_result_structure(predictor, frame):
    result = predictor.predict(frame, "vgd", prompt_masks=PROMPTS, threshold=0.0)
    assert result.masks.shape[1:] == (HEIGHT, WIDTH) and result.masks.dtype == bool
    assert set(result.labels) <= {0, 1}  # label = prompt index
    assert (np.diff(result.scores) <= 0).all() and (result.scores >= 0).all()
    assert result.masks.reshape(len(result), -1).any(1).all()  # no empty mask
    assert result.embeddings.shape == (len(result), predictor.model.config.decoder_config.hidden_dim)
    stricter = predictor.predict(frame, "vgd", prompt_masks=PROMPTS, threshold=0.3)
    assert len(stricter) == (result.scores >= 0.3).sum()


def test_memory_is_small_picklable_and_names_prompts(predictor, frame):
    memory = predictor.encode_prompts(frame, PROMPTS, prompt_ids=[7, 3])
    assert memory.prompt_ids == (7, 3)
    config = predictor.model.config
    expected = 2 * (config.text_config.hidden_size + config.decoder_config.hidden_dim) * 4 + 2 * 8
    assert memory.nbytes() == expected + config.decoder_config.hidden_dim * 4 + 2 * 8
    restored = pickle.loads(pickle.dumps(memory))
    assert isinstance(restored, XSamPromptMemory)
    np.testing.assert_array_equal(restored.conditions, memory.conditions)
    assert set(predictor.segment(frame, restored, threshold=0.0).labels) <= {7, 3}


def test_region_tokens_are_reproducible_with_the_seed(predictor, frame):
    first = predictor.encode_prompts(frame, PROMPTS)
    np.testing.assert_array_equal(predictor.encode_prompts(frame, PROMPTS).region_tokens, first.region_tokens)


def test_refresh_pins_the_user_tokens_and_adds_keyframe_tokens(predictor, frame):
    memory = predictor.encode_prompts(frame, PROMPTS, prompt_ids=[10, 11])
    found = predictor.segment(frame, memory, threshold=0.0)
    other_frame = np.roll(frame, 9, axis=1)

    refreshed = predictor.refresh(other_frame, memory, found.masks, found.scores, found.labels, min_score=0.0)
    assert refreshed.prompt_ids == memory.prompt_ids
    np.testing.assert_array_equal(refreshed.region_tokens[:2], memory.region_tokens)  # the user's, pinned
    assert refreshed.region_labels.tolist()[:2] == [0, 1] and len(refreshed.region_labels) == 2 + len(set(found.labels))
    assert refreshed.conditions.shape == (len(refreshed.region_labels), memory.conditions.shape[1])
    assert set(predictor.segment(other_frame, refreshed, threshold=0.0).labels) <= {10, 11}

    twice = predictor.refresh(other_frame, refreshed, found.masks, found.scores, found.labels, min_score=0.0)
    assert len(twice.region_labels) == len(refreshed.region_labels)  # bounded: user + latest keyframe only
    unchanged = predictor.refresh(other_frame, memory, found.masks, found.scores, found.labels, min_score=2.0)
    assert unchanged is memory
    large_frame = np.zeros((600, 1000, 3), np.uint8)  # shrunk 7.8x onto the tiny model's 128-pixel canvas
    speck = np.zeros((1, 600, 1000), bool)
    speck[0, 1, 1] = True  # one pixel vanishes at the model's resolution, so it cannot become a prompt
    assert predictor.refresh(large_frame, memory, speck, np.ones(1), np.array([10])) is memory


def test_interactive_returns_the_mask_whose_box_best_matches_the_prompt(predictor, frame):
    result = predictor.predict(frame, "interactive", prompt_masks=PROMPTS[:1])
    assert result.masks.shape == (1, HEIGHT, WIDTH) and result.labels.tolist() == [0]
    with pytest.raises(ValueError, match="exactly one prompt mask"):
        predictor.predict(frame, "interactive", prompt_masks=PROMPTS)


@pytest.mark.parametrize("text", ["ins: person, car; sem: sky, road", "ins: person, car", "sem: sky, road"])
def test_generic_segmentation_kinds(predictor, frame, text):
    query = parse_generic_query(text)
    result = predictor.predict(frame, "generic", text=text, threshold=0.0)
    assert set(result.labels) <= set(range(len(query.categories)))
    if query.kind == "semantic":  # every pixel gets one class
        assert len(result) >= 1 and (result.masks.sum(0) == 1).all()
        assert ((0 <= result.scores) & (result.scores <= 1)).all()
    if query.kind == "instance":
        assert result.embeddings is not None and len(result) > 0


def test_generic_query_syntax():
    panoptic = parse_generic_query("ins: person, bicycle; sem: sky")
    assert panoptic.categories == ("person", "bicycle", "sky") and panoptic.stuff == {2}
    assert panoptic.kind == "panoptic"
    assert parse_generic_query("dog, cat").kind == "instance"
    assert parse_generic_query("sem: wall-other-merged").kind == "semantic"
    with pytest.raises(ValueError, match="no category"):
        parse_generic_query(" ; ")


@pytest.mark.parametrize("task", ["referring", "reasoning"])
def test_text_grounded_tasks_return_one_mask(predictor, frame, task):
    result = predictor.predict(frame, task, text="the red car on the left")
    assert result.masks.shape == (1, HEIGHT, WIDTH) and 0 <= result.scores[0] <= 1


def test_generation_mode_returns_text(predictor, frame):
    chat = predictor.predict(frame, "chat", text="describe the image", max_new_tokens=4)
    assert isinstance(chat.text, str) and len(chat) == 0
    answer = predictor.predict(frame, "referring", text="the dog", generate=True, max_new_tokens=4)
    assert isinstance(answer.text, str)  # random weights never emit <SEG>: text only
    assert len(answer) == 0


def _force_answer(monkeypatch, predictor, answer: str) -> None:
    """Make greedy generation answer ``answer`` (then stop), with the states the LLM gives that answer."""
    processor, model = predictor.processor, predictor.model
    forced = torch.tensor(processor.tokenizer.encode(answer, add_special_tokens=False) + processor.stop_token_ids[:1])

    def generate_states(inputs_embeds, max_new_tokens, eos_token_ids):
        embeds = torch.cat([inputs_embeds, model.llm.get_input_embeddings()(forced[None, :-1])], dim=1)
        return forced, model.language_states(embeds)[0]

    monkeypatch.setattr(model, "generate_states", generate_states)


def test_generation_with_a_seg_token_uses_its_state(predictor, frame, monkeypatch):
    """Force the greedy answer 'sure <SEG> .' and check the masks come from the <SEG> position's state."""
    _force_answer(monkeypatch, predictor, "sure <SEG> .")
    result = predictor.predict(frame, "referring", text="the dog", generate=True)
    assert result.text.startswith("sure <SEG>") and len(result) == 1


@pytest.mark.parametrize("answer", ["sure <SEG> .", "<p> dog </p> <SEG> ."])
def test_chat_answers_in_text_even_when_the_answer_holds_a_seg_token(predictor, frame, monkeypatch, answer):
    _force_answer(monkeypatch, predictor, answer)
    with _counter(predictor) as counter:
        result = predictor.predict(frame, "chat", text="what is this?")
    assert result.text.startswith(answer.split()[0]) and len(result) == 0
    assert counter.counts["decoder"] == 0  # chat never runs the mask decoder


def test_siglip_input_is_the_image_centred_on_a_mean_grey_square(predictor, frame):
    """X-SAM's demo and evaluation pad to a square of SigLIP's mean colour (127) before resizing, not squash."""
    processor, config = predictor.processor, predictor.model.config
    size = config.siglip_config.image_size
    padded = processor.siglip_inputs(frame)[0]
    assert padded.shape == (3, size, size)
    band = (WIDTH - HEIGHT) // 2 * size // WIDTH  # rows of the square above the image, after the resize
    grey = (127 / 255 - 0.5) / 0.5
    torch.testing.assert_close(padded[:, : band - 1], torch.full_like(padded[:, : band - 1], grey), atol=1e-6, rtol=0)
    torch.testing.assert_close(padded[:, -(band - 1) :], torch.full_like(padded[:, : band - 1], grey), atol=1e-6, rtol=0)
    assert padded[:, band + 1 : -(band + 1)].std() > 0.1  # the random frame in the middle (std ~0.18 after the resize)
    config.siglip_pad_to_square = False
    try:
        squashed = processor.siglip_inputs(frame)[0]
    finally:
        config.siglip_pad_to_square = True
    assert squashed[:, : band - 1].std() > 0.1  # the frame fills the whole square


def test_input_errors_are_named(predictor, frame):
    with pytest.raises(ValueError, match="needs a text"):
        predictor.predict(frame, "referring")
    with pytest.raises(ValueError, match="prompt 1: the mask is empty"):
        predictor.encode_prompts(frame, [PROMPTS[0], np.zeros((HEIGHT, WIDTH), bool)])
    with pytest.raises(ValueError, match=r"prompt 0: mask is \(10, 10\)"):
        predictor.encode_prompts(frame, [np.ones((10, 10), bool)])
    with pytest.raises(ValueError, match="RGB uint8"):
        predictor.segment(frame.astype(np.float32), predictor.encode_prompts(frame, PROMPTS[:1]))
    with pytest.raises(ValueError, match="unknown task"):
        predictor.predict(frame, "detect")
    budget = predictor.processor.text_budget
    assert budget == 480  # the tiny checkpoint's 512-token context less 7.4² SigLIP and 16 SAM tokens
    with pytest.raises(ValueError, match=rf"the prompt is \d+ tokens; X-SAM's text budget is {budget}"):
        predictor.predict(frame, "referring", text=" ".join(["dog"] * budget))
