"""Prompt specs from the command line and prompt files.

Command-line syntax (one prompt per ``--prompt``, ids 0, 1, 2 … in order)::

    point:X,Y[;X,Y...][@FRAME]
    box:X0,Y0,X1,Y1[@FRAME]
    scribble:PATH.png[@FRAME]     any nonzero pixel is prompt, as X-SAM does
    mask:PATH.png[@FRAME]
    objects:PATH.png[@FRAME]      a DAVIS annotation (indexed PNG): one mask prompt per object index

Coordinates are source pixels; ``FRAME`` defaults to 0. ``objects:`` gives object k prompt id k and, on
that frame, track id k; the other specs take their position as prompt id, and an id given twice is refused.

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
from PIL import Image

from operators.errors import IMAGE_READ_ERRORS, InvalidPromptError
from operators.records import Prompt, PromptError
from pipeline.config import read_mapping_file

PROMPT_KINDS = ("point", "box", "scribble", "mask")
#: A spec that expands to one mask prompt per object of a DAVIS-style annotation.
OBJECTS = "objects"
SPEC_KINDS = (*PROMPT_KINDS, OBJECTS)
#: DAVIS's void index (unlabelled pixels, in some annotations): no object.
VOID_INDEX = 255


def _numbers(text: str, source: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise InvalidPromptError(source, f"expected comma-separated numbers, got {text!r}") from None


def _read_image(path: Path, source: str, indexed: bool = False) -> np.ndarray:
    """A prompt image's grey levels, or (``indexed``) the palette indices of an indexed PNG."""
    try:
        with Image.open(path) as image:
            if indexed and image.mode != "P":
                raise InvalidPromptError(source, f"{path} is not an indexed (palette) PNG but mode {image.mode}: an "
                                                 "objects: annotation holds one palette index per object, as DAVIS's")
            return np.asarray(image if indexed else image.convert("L"))
    except FileNotFoundError:
        raise InvalidPromptError(source, f"prompt image {path} does not exist") from None
    except IMAGE_READ_ERRORS as exc:
        raise InvalidPromptError(source, f"prompt image {path} is not a readable image ({exc})") from None


def load_prompt_mask(path: str | Path, source: str | None = None) -> np.ndarray:
    """Read a scribble/mask PNG as a boolean array: any nonzero pixel is prompt."""
    return _read_image(Path(path), source or str(path)) > 0


def load_object_masks(path: str | Path, source: str | None = None) -> dict[int, np.ndarray]:
    """A DAVIS-style annotation: object index -> its boolean mask, for every index but 0 (background) and 255
    (void)."""
    path = Path(path)
    indices = _read_image(path, source or str(path), indexed=True)
    objects = {int(k): indices == k for k in np.unique(indices) if 0 < k < VOID_INDEX}
    if not objects:
        raise InvalidPromptError(source or str(path), f"annotation {path} has no object: every pixel is index 0 "
                                                      f"(background) or {VOID_INDEX} (void)")
    return objects


def _build_all(prompt_id: int, kind: str, frame: int, body: Any, base: Path, source: str) -> list[Prompt]:
    """A spec's prompts: one per object for ``objects:``, else the one prompt of id ``prompt_id``."""
    if kind != OBJECTS:
        return [_build(prompt_id, kind, frame, body, base, source)]
    objects = load_object_masks(base / str(body), source)
    try:
        return [Prompt(k, "mask", frame, mask=mask, track_id=k) for k, mask in objects.items()]
    except PromptError as exc:
        raise InvalidPromptError(source, str(exc)) from None


def _build(prompt_id: int, kind: str, frame: int, body: Any, base: Path, source: str) -> Prompt:
    if kind not in SPEC_KINDS:
        raise InvalidPromptError(source, f"unknown prompt type {kind!r}; use one of {', '.join(SPEC_KINDS)}")
    if kind == OBJECTS:
        raise InvalidPromptError(source, "objects: gives one prompt per object; it is taken by run's --prompt, "
                                         "prompt files and eval")
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
    """Parse one ``KIND:BODY[@FRAME]`` command-line spec that gives one prompt (any but ``objects:``)."""
    kind, frame, body = _split_spec(spec)
    return _build(prompt_id, kind, frame, body, base or Path.cwd(), spec)


def parse_prompts(spec: str, prompt_id: int, base: Path | None = None) -> list[Prompt]:
    """Parse one command-line spec, ``objects:`` included; ``prompt_id`` is the id of a spec that gives one."""
    kind, frame, body = _split_spec(spec)
    return _build_all(prompt_id, kind, frame, body, base or Path.cwd(), spec)


def _split_spec(spec: str) -> tuple[str, int, Any]:
    """``KIND:BODY[@FRAME]`` -> kind, frame and body (a point spec's body split into its points)."""
    kind, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise InvalidPromptError(spec, "a prompt is KIND:VALUE, e.g. point:120,80 or box:10,20,200,150")
    body, _, frame_text = rest.rpartition("@") if "@" in rest else (rest, "", "0")
    try:
        frame = int(frame_text)
    except ValueError:
        raise InvalidPromptError(spec, f"frame after @ must be an integer, got {frame_text!r}") from None
    kind = kind.strip().lower()
    return kind, frame, body.split(";") if kind == "point" else body


def parse_prompt_entry(entry: Any, prompt_id: int, base: Path, source: str) -> list[Prompt]:
    """One prompt-file entry (a spec string or an object) -> its prompts (``objects:`` gives several)."""
    if isinstance(entry, str):
        return parse_prompts(entry, prompt_id, base)
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
    return _build_all(prompt_id, kind, frame, body, base, source)


def _distinct_ids(prompts: list[Prompt], source: str) -> list[Prompt]:
    seen: set[int] = set()
    for prompt in prompts:
        if prompt.prompt_id in seen:
            raise InvalidPromptError(source, f"prompt id {prompt.prompt_id} is given twice: an objects: spec takes "
                                             "its object indices as ids, every other spec its position")
        seen.add(prompt.prompt_id)
    return prompts


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
        default = _distinct_ids([p for i, s in enumerate(specs) for p in parse_prompts(s, i)], "--prompt")
        if prompts_file is None:
            return cls(default)
        path = Path(prompts_file)
        data = read_mapping_file(path, "prompt file", InvalidPromptError)
        per_video: dict[str, list[Prompt]] = {}
        for key, entries in data.items():
            if not isinstance(entries, list):
                raise InvalidPromptError(str(path), f"entry {key!r} must be a list of prompts")
            where = f"{path} [{key}]"
            prompts = [p for i, e in enumerate(entries) for p in parse_prompt_entry(e, i, path.parent, where)]
            per_video[key] = _distinct_ids(prompts, where)
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
