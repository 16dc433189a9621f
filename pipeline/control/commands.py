"""The one command handler of the live service, shared by the Redis control stream and the HTTP API.

Commands come from the network, so each one is checked completely before it is answered and before the
runner sees it: stream ids (they name output folders), sources (:class:`SourcePolicy`), prompts (parsed
as the prompt file's entries, then checked against the stream's frame size) and prompt ids. A refused
command raises :class:`CommandError` with the reason and an HTTP status; the streams run on.

The runner is any object with the live service's methods (``add_stream``, ``remove_stream``,
``add_prompts``, ``remove_prompts``, ``stream_report``, ``summary``, ``latest_frame_jpeg``): the
in-process :class:`pipeline.live.LiveRunner` or the Ray one.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Collection, Mapping, Optional, Sequence, Union
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from operators.errors import PipelineError
from operators.records import Prompt, PromptError
from pipeline.prompts import OBJECTS, parse_prompt, parse_prompt_entry
from pipeline.sources import is_live_source

#: Stream ids name output folders (OUT/<id>/), so they are plain names: no separators, no leading dot.
STREAM_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
#: The most prompts one command may add.
MAX_PROMPTS = 64
#: Prompt kinds given as an image.
MASK_KINDS = ("scribble", "mask")
#: The largest painted prompt accepted for a stream whose frame size is not known yet (8K video).
MAX_MASK_SIDE = 8192
#: The URL schemes a source added at run time may use unless the operator names others (--allow-schemes).
#: http and https are left out: a control message could make the service send a GET to any address it can
#: reach (cloud metadata, admin pages on loopback), a request forgery. Capture devices are local hardware.
DEFAULT_SCHEMES = ("rtsp", "rtsps", "srt", "udp", "rtp", "tcp")
#: Every name --allow-schemes takes: the live URL schemes plus ``device`` for /dev/videoN.
KNOWN_SCHEMES = ("rtsp", "rtsps", "srt", "udp", "rtp", "tcp", "http", "https", "device")
ENDED = ("stopped", "failed")


class CommandError(Exception):
    """A refused command: ``reason`` for the reply, ``status`` the HTTP status it maps to."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class SourcePolicy:
    """Which sources a control message may open: URLs of ``schemes`` (``device``: /dev/videoN), and local
    files only with ``allow_files``. Sources given on the command line are the operator's and not checked."""

    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    allow_files: bool = False

    def __post_init__(self) -> None:
        unknown = sorted(set(self.schemes) - set(KNOWN_SCHEMES))
        if unknown:
            raise ValueError(f"unknown source scheme {', '.join(unknown)}: use {', '.join(KNOWN_SCHEMES)}")

    def check(self, source: str) -> None:
        if not source.strip():
            raise CommandError("the source is empty")
        if is_live_source(source):
            scheme = "device" if source.startswith("/dev/video") else urlsplit(source).scheme.lower()
            if scheme not in self.schemes:
                raise CommandError(f"source {source!r}: {scheme} sources are not allowed here (allowed: "
                                   f"{', '.join(self.schemes)}; the operator adds more with --allow-schemes)", 403)
            return
        if "://" in source or source.lower().startswith(("file:", "concat:", "subfile:", "pipe:", "data:")):
            raise CommandError(f"source {source!r}: not a live URL (allowed schemes: {', '.join(self.schemes)})")
        if not self.allow_files:
            raise CommandError(f"source {source!r}: local files are not allowed here (the operator allows them "
                               "with --allow-files)", 403)
        if not Path(source).is_file():
            raise CommandError(f"source {source!r}: no such file", 404)


def derive_stream_id(source: str, taken: Collection[str]) -> str:
    """A stream id made from ``source`` (its URL without the scheme, as a folder name), unique among ``taken``."""
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in source.split("://")[-1]).strip("_.-")[:56]
    base = base or "stream"
    candidate, number = base, 1
    while candidate in taken:
        candidate, number = f"{base}_{number}", number + 1
    return candidate


def check_stream_id(stream_id: str) -> str:
    if not isinstance(stream_id, str) or not STREAM_ID.fullmatch(stream_id):
        raise CommandError(f"stream id {stream_id!r}: use 1-64 letters, digits, '_', '.' or '-', not starting "
                           "with '.' or '-'")
    return stream_id


def _painted_mask(entry: Mapping[str, Any], prompt_id: int, frame_size: tuple[int, int] | None) -> np.ndarray:
    """A ``{"type": "scribble"|"mask", "png": BASE64}`` prompt's mask; its size is read from the PNG header and
    checked before any pixel is decoded (a small PNG can hold a huge image)."""
    text = str(entry["png"])
    try:
        data = base64.b64decode(text.partition("base64,")[2] or text, validate=True)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if frame_size is not None and (width, height) != frame_size:
                raise CommandError(f"prompt {prompt_id} ({entry['type']}): the image is {width}x{height}, "
                                   f"the stream's frames are {frame_size[0]}x{frame_size[1]}")
            if max(width, height) > MAX_MASK_SIDE:
                raise CommandError(f"prompt {prompt_id} ({entry['type']}): the image is {width}x{height}, larger "
                                   f"than any frame ({MAX_MASK_SIDE} px a side at most)")
            return np.asarray(image.convert("L")) > 0
    except (binascii.Error, ValueError):
        raise CommandError(f"prompt {prompt_id} ({entry['type']}): 'png' is not base64") from None
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise CommandError(f"prompt {prompt_id} ({entry['type']}): 'png' is not a readable image ({exc})") from None


class CommandHandler:
    """Validates and applies control commands to ``runner``; see the module docstring.

    ``make_spec(stream_id, source, prompts)`` builds a new stream's spec with the service's settings.
    Prompt images named by a path are local files: they are read only with ``policy.allow_files``.
    """

    def __init__(self, runner: Any, make_spec: Callable[[str, str, list[Prompt]], Any],
                 policy: SourcePolicy | None = None) -> None:
        self.runner = runner
        self.make_spec = make_spec
        self.policy = policy or SourcePolicy()
        self._lock = threading.Lock()  # commands of several clients: one at a time, so prompt ids stay unique

    # -- queries ----------------------------------------------------------------------------------
    def streams(self) -> list[dict]:
        return self.runner.summary()["streams"]

    def report(self, stream_id: str) -> dict:
        try:
            return self.runner.stream_report(stream_id)
        except KeyError:
            raise CommandError(f"no stream {stream_id!r}", 404) from None

    def frame_jpeg(self, stream_id: str) -> bytes:
        self.report(stream_id)
        jpeg = self.runner.latest_frame_jpeg(stream_id)
        if jpeg is None:
            raise CommandError(f"stream {stream_id!r} has processed no frame yet", 404)
        return jpeg

    # -- streams ----------------------------------------------------------------------------------
    def add_stream(self, source: str, stream_id: str | None = None, prompts: Sequence[Any] = ()) -> dict:
        """Start a stream; its prompts are checked against its frame once it connects (a prompt that does not
        fit is reported as a ``prompt_rejected`` event, the stream runs on)."""
        with self._lock:
            self.policy.check(source)
            known = {s["stream_id"]: s["status"] for s in self.streams()}
            if stream_id is None:
                stream_id = derive_stream_id(source, known)
            check_stream_id(stream_id)
            if stream_id in known:  # an ended stream's id too: a new stream would overwrite its records
                raise CommandError(f"stream {stream_id!r} is already running" if known[stream_id] not in ENDED else
                                   f"stream {stream_id!r} has {known[stream_id]} and its records keep that id: give "
                                   "the new stream another id", 409)
            parsed = self._parse(prompts, list(range(len(prompts))), None)
            try:
                self.runner.add_stream(self.make_spec(stream_id, source, parsed))
            except ValueError as exc:  # the runner's own refusal (a stream of that id still finishing)
                raise CommandError(str(exc), 409) from None
            return {"stream_id": stream_id, "prompt_ids": [p.prompt_id for p in parsed]}

    def remove_stream(self, stream_id: str, timeout: float = 30.0) -> dict:
        """Stop a stream, flush its sinks and return its final report."""
        self.report(stream_id)
        return self.runner.remove_stream(stream_id, timeout)

    # -- prompts ----------------------------------------------------------------------------------
    def add_prompts(self, stream_id: str, prompts: Sequence[Any], prompt_ids: Sequence[int] | None = None) -> dict:
        """Give a running stream prompts, each checked against its frame size; ids default to the next unused."""
        with self._lock:
            report = self._connected(stream_id)
            if not prompts:
                raise CommandError("no prompts given")
            used = set(report["prompt_ids_used"])
            if prompt_ids is None:
                start = max(used, default=-1) + 1
                prompt_ids = list(range(start, start + len(prompts)))
            ids = [_prompt_id(i) for i in prompt_ids]
            if len(ids) != len(prompts):
                raise CommandError(f"{len(ids)} prompt ids for {len(prompts)} prompts")
            if len(set(ids)) != len(ids):
                raise CommandError(f"prompt ids {ids} repeat an id")
            taken = sorted(set(ids) & used)
            if taken:
                raise CommandError(f"prompt ids {taken} are taken on stream {stream_id!r} (ids are not reused; used: "
                                   f"{sorted(used)})", 409)
            parsed = self._parse(prompts, ids, tuple(report["frame_size"]))
            return {"added": self.runner.add_prompts(stream_id, parsed)}

    def remove_prompts(self, stream_id: str, prompt_ids: Sequence[int]) -> dict:
        with self._lock:
            report = self._connected(stream_id)
            ids = [_prompt_id(i) for i in prompt_ids]
            if not ids:
                raise CommandError("no prompt ids given")
            unknown = sorted(set(ids) - set(report["prompt_ids"]))
            if unknown:
                raise CommandError(f"stream {stream_id!r} has no prompt {', '.join(map(str, unknown))} (its prompts: "
                                   f"{report['prompt_ids']})", 404)
            self.runner.remove_prompts(stream_id, ids)
            return {"removed": ids}

    def _connected(self, stream_id: str) -> dict:
        report = self.report(stream_id)
        if report["status"] in ENDED:
            raise CommandError(f"stream {stream_id!r} has {report['status']}", 409)
        if report["frame_size"] is None:
            raise CommandError(f"stream {stream_id!r} is not connected yet (its frame size is unknown, so its "
                               "prompts cannot be checked): retry once its report shows frame_size", 409)
        return report

    def _parse(self, entries: Sequence[Any], ids: Sequence[int], frame_size: tuple[int, int] | None) -> list[Prompt]:
        """Prompt specs or prompt-file objects -> prompts, each checked against ``frame_size`` (width, height)
        when it is known."""
        if len(entries) > MAX_PROMPTS:
            raise CommandError(f"{len(entries)} prompts in one command; at most {MAX_PROMPTS}")
        prompts = []
        for entry, prompt_id in zip(entries, ids):
            try:
                prompt = self._parse_one(entry, prompt_id, frame_size)
                if frame_size is not None:
                    prompt.validate(frame_size[1], frame_size[0])
            except (PipelineError, PromptError) as exc:
                raise CommandError(str(exc)) from None
            prompts.append(prompt)
        return prompts

    def _parse_one(self, entry: Any, prompt_id: int, frame_size: tuple[int, int] | None) -> Prompt:
        if isinstance(entry, Mapping) and "png" in entry and str(entry.get("type", "")).lower() in MASK_KINDS:
            frame = entry.get("frame", 0)
            if isinstance(frame, bool) or not isinstance(frame, int):
                raise CommandError(f"prompt {prompt_id}: 'frame' must be an integer, got {frame!r}")
            return Prompt(prompt_id, str(entry["type"]).lower(), frame, mask=_painted_mask(entry, prompt_id, frame_size))
        kind = (entry.partition(":")[0] if isinstance(entry, str) else
                str(entry.get("type", "")) if isinstance(entry, Mapping) else "").strip().lower()
        if kind == OBJECTS:
            raise CommandError(f"prompt {prompt_id}: objects: gives one prompt per object of an annotation file; a "
                               "live stream takes each object as its own scribble or mask prompt")
        if kind in MASK_KINDS and not self.policy.allow_files:
            raise CommandError(f"prompt {prompt_id}: a {kind} prompt from the network is an inline image "
                               "({\"type\": \"scribble\", \"png\": BASE64}); image paths are local files, read only "
                               "with --allow-files", 403)
        if isinstance(entry, str):
            return parse_prompt(entry, prompt_id)
        if isinstance(entry, Mapping):
            [prompt] = parse_prompt_entry(entry, prompt_id, Path.cwd(), f"prompt {prompt_id}")
            return prompt
        raise CommandError(f"prompt {prompt_id}: expected a spec string or an object, got {type(entry).__name__}")


def _prompt_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise CommandError(f"prompt id {value!r} is not a non-negative integer")
    return value


# --------------------------------------------------------------------------- command bodies

#: A prompt as in a prompt file: a spec string, or an object (``{"type": "box", "box": [...]}``; a painted
#: scribble or mask as ``{"type": "scribble", "png": BASE64}``).
PromptEntry = Annotated[Union[StrictStr, dict[str, Any]], Field(union_mode="left_to_right")]
PromptId = Annotated[StrictInt, Field(ge=0, lt=2**31)]


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewStream(CommandBody):
    """``POST /streams``."""

    source: str = Field(min_length=1, max_length=4096)
    id: Optional[str] = Field(default=None, max_length=64)
    prompts: list[PromptEntry] = Field(default_factory=list, max_length=MAX_PROMPTS)


class NewPrompts(CommandBody):
    """``POST /streams/{id}/prompts``; ``prompt_ids`` default to the stream's next unused ids."""

    prompts: list[PromptEntry] = Field(min_length=1, max_length=MAX_PROMPTS)
    prompt_ids: Optional[list[PromptId]] = Field(default=None, max_length=MAX_PROMPTS)


def body_error(error: ValidationError) -> CommandError:
    """A command body that does not parse, as one line naming each bad field."""
    problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors()[:5])
    return CommandError(f"invalid command: {problems}", 422)
