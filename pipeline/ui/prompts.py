"""The page's prompts: the CLI's spec strings, parsed by the CLI's own parser, so the page and ``run`` agree.

A point or box prompt is just its spec (``box:X0,Y0,X1,Y1@F``). A scribble or mask painted on the page is
its spec naming a bare PNG file (``scribble:prompt-2.png@F``) plus the PNG itself, which is written into
the folder the spec resolves against (the job's output folder, or a scratch folder for a preview).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Sequence

from pydantic import BaseModel, Field

from operators.errors import InvalidPromptError
from operators.records import Prompt
from operators.output_files import write_output
from pipeline.prompts import parse_prompt

#: The file a painted prompt's spec may name: a bare name, written by the server, never a path.
PAINTED_FILE = re.compile(r"[A-Za-z0-9_-]{1,64}\.png")
#: A painted prompt's PNG at most (a 4K frame's 1-bit-like PNG is far smaller).
MAX_PNG_BYTES = 8 * 1024 * 1024


class PagePrompt(BaseModel):
    """One prompt as the page sends it."""

    spec: str = Field(max_length=4096)
    png: str | None = Field(default=None, max_length=MAX_PNG_BYTES * 4 // 3 + 64,  # base64, a data: URL's prefix
                            description="base64 PNG (optionally a data: URL) of a painted prompt")


def painted_file(spec: str) -> str | None:
    """The PNG file a ``scribble:`` or ``mask:`` spec names, else None."""
    kind, _, rest = spec.partition(":")
    if kind.strip().lower() not in ("scribble", "mask"):
        return None
    return rest.rpartition("@")[0] if "@" in rest else rest


def write_painted(prompts: Sequence[PagePrompt], folder: Path) -> None:
    """Write each painted prompt's PNG into ``folder`` under the bare name its spec gives."""
    for prompt_id, prompt in enumerate(prompts):
        name = painted_file(prompt.spec)
        if name is None:
            continue
        if not PAINTED_FILE.fullmatch(name):
            raise InvalidPromptError(prompt.spec, f"prompt {prompt_id}: a painted prompt names a bare .png file")
        if prompt.png is None:
            raise InvalidPromptError(prompt.spec, f"prompt {prompt_id}: the painted image was not sent")
        try:
            data = base64.b64decode(prompt.png.partition("base64,")[2] or prompt.png, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidPromptError(prompt.spec, f"prompt {prompt_id}: the painted image is not base64") from None
        if len(data) > MAX_PNG_BYTES:
            raise InvalidPromptError(prompt.spec, f"prompt {prompt_id}: the painted image is over "
                                                  f"{MAX_PNG_BYTES // 2**20} MiB")
        write_output(folder / name, data)


def parse_page_prompts(prompts: Sequence[PagePrompt], folder: Path) -> list[Prompt]:
    """The prompts, ids 0, 1, 2 … in order as on the command line; painted PNGs are written to ``folder``
    first. Errors are the CLI's (:class:`InvalidPromptError` naming the spec and the reason)."""
    if not prompts:
        raise InvalidPromptError("prompts", "place a prompt first: click a point, drag a box or paint a scribble")
    write_painted(prompts, folder)
    return [parse_prompt(p.spec, i, base=folder) for i, p in enumerate(prompts)]


def check_on_frame(prompts: Sequence[Prompt], source: str, height: int, width: int) -> None:
    """:class:`InvalidPromptError` if a prompt does not fit the source's ``height`` x ``width`` frames."""
    for prompt in prompts:
        try:
            prompt.validate(height, width)
        except ValueError as exc:
            raise InvalidPromptError(source, str(exc), prompt.frame_index) from None
