"""Prompt specs from the command line and prompt files.

Command-line syntax (one prompt per ``--prompt``, ids 0, 1, 2 … in order)::

    point:X,Y[;X,Y...][@FRAME]
    box:X0,Y0,X1,Y1[@FRAME]
    scribble:PATH.png[@FRAME]     any nonzero pixel is prompt, as X-SAM does
    mask:PATH.png[@FRAME]

Coordinates are source pixels; ``FRAME`` defaults to 0.

A prompt file (JSON, or YAML) gives prompts per video for batch jobs; keys are file
names, stems or paths, and ``"*"`` applies to videos not named::

    {"*": ["point:120,80"],
     "cars.mp4": [{"type": "box", "box": [10, 20, 200, 150], "frame": 30},
                  {"type": "scribble", "path": "scribbles/car.png"}]}

Relative PNG paths in a prompt file resolve against the file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from operators.errors import InvalidPromptError
from operators.records import Prompt, PromptError
from pipeline.config import read_mapping_file

PROMPT_KINDS = ("point", "box", "scribble", "mask")


def _numbers(text: str, source: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InvalidPromptError(source, f"expected comma-separated numbers, got {text!r}") from None


def load_prompt_mask(path: str | Path, source: str | None = None) -> np.ndarray:
    """Read a scribble/mask PNG as a boolean array: any nonzero pixel is prompt."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L")) > 0
    except FileNotFoundError:
        raise InvalidPromptError(source or str(path), f"prompt image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidPromptError(source or str(path), f"prompt image {path} is not a readable image ({exc})") from None


def _build(prompt_id: int, kind: str, frame: int, body: Any, base: Path, source: str) -> Prompt:
    if kind not in PROMPT_KINDS:
        raise InvalidPromptError(source, f"unknown prompt type {kind!r}; use one of {', '.join(PROMPT_KINDS)}")
    try:
        if kind == "point":
            pairs = [_numbers(p, source) for p in body] if isinstance(body, list) else [
                _numbers(p, source) for p in str(body).split(";")
            ]
            if any(len(p) != 2 for p in pairs):
                raise InvalidPromptError(source, f"a point is x,y; got {body!r}")
            return Prompt(prompt_id, "point", frame, points=tuple((p[0], p[1]) for p in pairs))
        if kind == "box":
            values = _numbers(",".join(map(str, body)), source) if isinstance(body, list) else _numbers(str(body), source)
            if len(values) != 4:
                raise InvalidPromptError(source, f"a box is x0,y0,x1,y1; got {body!r}")
            return Prompt(prompt_id, "box", frame, box=tuple(values))  # type: ignore[arg-type]
        mask = load_prompt_mask(base / str(body), source)
        return Prompt(prompt_id, kind, frame, mask=mask)  # type: ignore[arg-type]
    except PromptError as exc:
        raise InvalidPromptError(source, str(exc)) from None


def parse_prompt(spec: str, prompt_id: int, base: Path | None = None) -> Prompt:
    """Parse one ``KIND:BODY[@FRAME]`` command-line spec."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise InvalidPromptError(spec, "a prompt is KIND:VALUE, e.g. point:120,80 or box:10,20,200,150")
    body, _, frame_text = rest.rpartition("@") if "@" in rest else (rest, "", "0")
    try:
        frame = int(frame_text)
    except ValueError:
        raise InvalidPromptError(spec, f"frame after @ must be an integer, got {frame_text!r}") from None
    points = body.split(";") if kind.strip() == "point" else body
    return _build(prompt_id, kind.strip().lower(), frame, points, base or Path.cwd(), spec)


def _parse_entry(entry: Any, prompt_id: int, base: Path, source: str) -> Prompt:
    if isinstance(entry, str):
        return parse_prompt(entry, prompt_id, base)
    if not isinstance(entry, Mapping) or "type" not in entry:
        raise InvalidPromptError(source, f"prompt {prompt_id}: expected a spec string or an object with 'type'")
    kind = str(entry["type"]).lower()
    body = {"point": entry.get("points") or entry.get("point"), "box": entry.get("box")}.get(kind, entry.get("path"))
    if body is None:
        needed = {"point": "points", "box": "box"}.get(kind, "path")
        raise InvalidPromptError(source, f"prompt {prompt_id} ({kind}) needs '{needed}'")
    if kind == "point":
        body = _point_strings(body, prompt_id, source)
    frame = entry.get("frame", 0)
    if isinstance(frame, bool) or not isinstance(frame, int):
        raise InvalidPromptError(source, f"prompt {prompt_id}: 'frame' must be an integer, got {frame!r}")
    return _build(prompt_id, kind, frame, body, base, source)


def _point_strings(body: Any, prompt_id: int, source: str) -> list[str]:
    """A prompt file's points as ``"x,y"`` strings: ``[x, y]``, ``[[x, y], ...]`` or the command line's
    ``"x,y;x,y"``."""
    if isinstance(body, str):
        return body.split(";")
    if isinstance(body, (list, tuple)) and body and all(isinstance(v, (int, float)) for v in body):
        body = [body]
    if not isinstance(body, (list, tuple)) or not all(isinstance(p, (list, tuple, str)) for p in body):
        raise InvalidPromptError(source, f"prompt {prompt_id}: points are [x, y], [[x, y], ...] or \"x,y;x,y\"; "
                                         f"got {body!r}")
    return [p if isinstance(p, str) else ",".join(str(v) for v in p) for p in body]


class PromptBook:
    """Prompts per video: command-line prompts for every video, plus a prompt file's per-video entries."""

    def __init__(self, default: Sequence[Prompt] = (), per_video: Mapping[str, Sequence[Prompt]] | None = None):
        self.default = list(default)
        self.per_video = dict(per_video or {})

    @classmethod
    def from_cli(cls, specs: Sequence[str], prompts_file: str | Path | None = None) -> "PromptBook":
        default = [parse_prompt(s, i) for i, s in enumerate(specs)]
        if prompts_file is None:
            return cls(default)
        path = Path(prompts_file)
        data = read_mapping_file(path, "prompt file", InvalidPromptError)
        per_video: dict[str, list[Prompt]] = {}
        for key, entries in data.items():
            if not isinstance(entries, list):
                raise InvalidPromptError(str(path), f"entry {key!r} must be a list of prompts")
            per_video[key] = [_parse_entry(e, i, path.parent, f"{path} [{key}]") for i, e in enumerate(entries)]
        wildcard = per_video.pop("*", None)
        return cls(default or wildcard or [], per_video)

    def for_video(self, path: str | Path) -> list[Prompt]:
        """The prompts for one video: its own entry (by path, name or stem), else the defaults."""
        path = Path(path)
        for key in (str(path), path.name, path.stem):
            if key in self.per_video:
                return list(self.per_video[key])
        return list(self.default)

    def unused_keys(self, paths: Sequence[str | Path]) -> list[str]:
        """Prompt-file entries that name no video of the job (likely typos)."""
        names = {k for p in map(Path, paths) for k in (str(p), p.name, p.stem)}
        return sorted(set(self.per_video) - names)
