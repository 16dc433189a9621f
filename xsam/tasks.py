"""The tasks X-SAM serves and the instruction of each: template 0 of X-SAM's ``*_map_fn`` lists, for determinism."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xsam.constants import PHRASE_END_TOKEN, PHRASE_START_TOKEN, REGION_TOKEN, SEG_TOKEN

Task = Literal["vgd", "interactive", "generic", "referring", "reasoning", "chat"]
TASKS: tuple[Task, ...] = ("vgd", "interactive", "generic", "referring", "reasoning", "chat")
GenericKind = Literal["panoptic", "instance", "semantic"]

#: The evaluation's teacher-forced answer (``ANSWER_LIST[3]`` of every segmentation task).
SEG_ANSWER = f"Sure, it is {SEG_TOKEN}."


def _phrase(text: str) -> str:
    return f"{PHRASE_START_TOKEN}{text}{PHRASE_END_TOKEN}"


def visual_prompt_instruction(num_regions: int) -> str:
    """VGD and interactive segmentation: one ``<p><region></p>`` per visual prompt."""
    regions = ", ".join([_phrase(REGION_TOKEN)] * num_regions)
    return (
        f"Can you segment the image based on the following regions: {regions}? "
        "Please output the corresponding segmentation mask."
    )


def generic_instruction(categories: list[str]) -> str:
    names = ", ".join(_phrase(clean_category(c)) for c in categories)
    return (
        f"Can you segment the image based on the following categories: {names}? Please output the segmentation masks."
    )


def referring_instruction(expression: str) -> str:
    return f"Please identify and segment the {_phrase(expression.strip().lower())} in this image."


def reasoning_instruction(question: str) -> str:
    """The whole question is the phrase (X-SAM's "long" reasoning template)."""
    return f"{_phrase(question.strip())} Please output the corresponding segmentation mask."


def clean_category(name: str) -> str:
    """COCO-style names as X-SAM saw them in training: ``wall-other-merged`` -> ``wall``."""
    for suffix in ("-merged", "-other", "-stuff"):
        name = name.replace(suffix, "")
    return name.replace("-", " ").strip().lower()


@dataclass(frozen=True)
class GenericQuery:
    """Categories for generic segmentation; ``stuff`` indexes the ``sem:`` ones (fused into one segment each)."""

    categories: tuple[str, ...]
    stuff: frozenset[int]
    kind: GenericKind


def parse_generic_query(text: str) -> GenericQuery:
    """X-SAM's demo syntax ``ins: person, car; sem: sky, road``.

    ``ins`` and ``sem`` -> panoptic, ``ins`` only (or no prefix) -> instance, ``sem`` only -> semantic.
    Categories keep their order (the demo shuffles them).
    """
    things: list[str] = []
    stuff: list[str] = []
    for part in text.split(";"):
        prefix, colon, names = part.partition(":")
        key = prefix.strip().lower()
        if not colon or key not in ("ins", "sem"):
            key, names = "ins", part
        (things if key == "ins" else stuff).extend(n.strip() for n in names.split(",") if n.strip())
    if not things and not stuff:
        raise ValueError(f"no category in {text!r}; write e.g. 'ins: person, car; sem: sky'")
    kind: GenericKind = "panoptic" if things and stuff else ("instance" if things else "semantic")
    return GenericQuery(tuple(things + stuff), frozenset(range(len(things), len(things) + len(stuff))), kind)
