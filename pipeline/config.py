"""Options of ``run`` and ``live`` (and of the Python API and deploy files): validated objects, every default
and help text written once, in their fields; the options every stream takes are :class:`StreamOptions`, which
``run``'s :class:`JobConfig` and ``live``'s :class:`pipeline.live.options.LiveConfig` extend.

The layering is pydantic-settings': explicit values (flags, keyword arguments), then ``XSAM_PIPELINE_<OPTION>``
environment variables (lists and mappings read as YAML), then the ``config`` YAML file, then the defaults,
which come from the operators that use them (:class:`~operators.keyframes.KeyframeConfig`,
:data:`~operators.stream.MAX_PENDING`).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (BaseSettings, EnvSettingsSource, InitSettingsSource, PydanticBaseSettingsSource,
                               SettingsConfigDict)

from operators.association import AssociationConfig
from operators.errors import PipelineError
from operators.extras import require
from operators.keyframes import KeyframeConfig
from operators.segmenters import check_checkpoint, check_segmenter, segmenter_class
from operators.sinks import SINKS, require_sink_packages, sink_kind
from operators.stream import MAX_PENDING
from pipeline.checkpoint import CHECKPOINT_EVERY
from pipeline.sources import DEFAULT_FOLDER_FPS

SINK_NAMES = ("jsonl", "png", "mp4")
ENV_PREFIX = "XSAM_PIPELINE_"


class LayeredOptions(BaseSettings):
    """Options read from explicit values, then ``XSAM_PIPELINE_*`` variables, then the ``config`` file."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", arbitrary_types_allowed=True)

    config: Path | None = Field(default=None, exclude=True, description="YAML file of options (see README)")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource, **_unused: object
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags over the environment over the file; no dotenv or secrets files."""
        environment = YamlEnvironment(settings_cls)
        given = init_settings.init_kwargs if isinstance(init_settings, InitSettingsSource) else {}
        path = given.get("config") or environment().get("config")
        return init_settings, environment, ConfigFile(settings_cls, Path(path) if path else None)


class YamlEnvironment(EnvSettingsSource):
    """``XSAM_PIPELINE_<OPTION>`` variables, lists and mappings read as YAML (``[jsonl, png]``); a variable
    naming no option is an error, not ignored."""

    def __call__(self) -> dict[str, Any]:
        prefix = ENV_PREFIX.lower()
        for name in self.env_vars:
            if name.startswith(prefix) and name[len(prefix):] not in self.settings_cls.model_fields:
                raise PipelineError(name.upper(), f"unknown option {name[len(prefix):]!r} in the environment")
        return super().__call__()

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        return parse_yaml(value, ENV_PREFIX + field_name.upper(), "the value")


class ConfigFile(PydanticBaseSettingsSource):
    """The ``config`` YAML file's options (``keyframe-every`` and ``keyframe_every`` alike)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        return {str(k).replace("-", "_"): v for k, v in read_mapping_file(self.path, "config file").items()}


class StreamOptions(LayeredOptions):
    """What every stream of ``run`` and ``live`` is configured by."""

    out_dir: Path = Field(description="output folder (created if missing)")
    segmenter: str = Field(default="default", description="default (weight-free), xsam (with --checkpoint) or "
                           "package.module:Class")
    segmenter_options: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    keyframe_every: int = Field(default=KeyframeConfig.every, ge=1, description="run the full segmenter every K "
                                "frames, propagate in between")
    ill_posed_every: int = Field(default=KeyframeConfig.ill_posed_every, ge=0, description="re-anchor a tracked "
                                 "object that is flat or striped (optical flow cannot measure its motion) every N "
                                 "frames, searching only around the tracked objects; 0 turns this off")
    sinks: list[str] = Field(default_factory=lambda: ["jsonl", "mp4"], min_length=1, description="outputs, "
                             f"repeatable or comma-separated: {', '.join(SINK_NAMES)}, "
                             "redis://HOST:PORT/DB?stream=NAME or mqtt://HOST:PORT/TOPIC")
    max_pending: int = Field(default=MAX_PENDING, ge=1, description="decoded frames a stream may hold waiting for "
                             "a keyframe")
    segmenter_placement: Literal["auto", "pool", "inline"] = Field(
        default="auto", description="segmenter actors (pool) or a segmenter in each stream worker (inline); "
        "auto: inline for the weight-free default segmenter on a cluster without GPUs")
    address: str | None = Field(default=None, description="Ray cluster to join; default: start a local one")

    @field_validator("sinks")
    @classmethod
    def _known_sinks(cls, sinks: list[str]) -> list[str]:
        unknown = sorted(s for s in set(sinks) if sink_kind(s) not in SINKS)
        if unknown:
            raise ValueError(f"unknown sink(s) {', '.join(unknown)}; choose from {', '.join(SINK_NAMES)} "
                             "or a redis://HOST:PORT/DB?stream=NAME or mqtt://HOST:PORT/TOPIC URL")
        require_sink_packages(sinks)
        return list(dict.fromkeys(sinks))

    @field_validator("segmenter")
    @classmethod
    def _importable_segmenter(cls, name: str) -> str:
        segmenter_class(name)  # its ValueError names the choices
        return name

    @field_validator("segmenter_options")
    @classmethod
    def _options_the_segmenter_takes(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Checked here, before any work: a segmenter built with wrong options would fail every video in its actor."""
        if "segmenter" in info.data:  # else the segmenter itself was invalid, and is reported
            check_segmenter(info.data["segmenter"], options)
        return options

    def keyframe_config(self) -> KeyframeConfig:
        return KeyframeConfig(every=self.keyframe_every, ill_posed_every=self.ill_posed_every)


class JobConfig(StreamOptions):
    """An archive job: every frame of every source, in order, N sources in parallel."""

    sources: list[str] = Field(min_length=1, description="video files, directories or globs")
    recursive: bool = Field(default=False, description="folders' subfolders too; ** in globs matches subfolders")
    prompts: list[str] = Field(default_factory=list, description="prompt specs applied to every video")
    prompts_file: Path | None = None
    decoder: Literal["pyav", "decord"] = Field(default="pyav", description="the video file decoder; decord (the "
                                               "decord extra) can abort its process on a damaged file")
    fps: float = Field(default=DEFAULT_FOLDER_FPS, gt=0, description="frame rate of frame-folder videos (folders "
                       "of JPEG/PNG frames), whose images carry no timestamps: frame i has pts i / fps")
    workers: int | None = Field(default=None, ge=1, description="segmenter actors; default: one per GPU, else 1")
    parallel: int | None = Field(default=None, ge=1, description="videos processed at once; default: the "
                                 "cluster's CPUs")
    split: bool | None = Field(default=None, description="split every long video into chunks that several stream "
                               "workers process at once, track ids stitched across the chunks; default: when the "
                               "job has fewer videos than parallel slots")
    checkpoint_every: int = Field(default=CHECKPOINT_EVERY, ge=0, description="frames between stream checkpoints "
                                  "(0: none)")
    resume: bool = True
    progress: bool = True

    @field_validator("decoder")
    @classmethod
    def _decoder_installed(cls, decoder: str) -> str:
        if decoder == "decord":
            require("decord")
        return decoder

    @model_validator(mode="after")
    def _checkpoint_on_this_machine(self) -> "JobConfig":
        """On a local Ray the segmenter reads its checkpoint here; a cluster's nodes have their own files."""
        if self.address is None and not os.environ.get("RAY_ADDRESS"):
            try:
                check_checkpoint(self.segmenter_options)
            except ValueError as exc:
                raise PydanticCustomError("segmenter_options", str(exc)) from None  # the type names the field
        return self

    @model_validator(mode="after")
    def _split_sinks_are_files(self) -> "JobConfig":
        """A split video's chunks run at once: only file outputs can be joined in order afterwards."""
        brokers = [s for s in self.sinks if sink_kind(s) not in SINK_NAMES]
        if self.split and brokers:
            raise PydanticCustomError("split", f"a split video is written only to file sinks ({', '.join(SINK_NAMES)}), not "
                                      f"{', '.join(brokers)}: a message queue would get the chunks' frames out of order")
        return self

    def association_config(self) -> AssociationConfig:
        return AssociationConfig()

    def fingerprint(self) -> dict[str, Any]:
        """What must match for a finished video to be skipped on a re-run."""
        return {
            "segmenter": self.segmenter,
            "segmenter_options": {k: str(v) for k, v in sorted(self.segmenter_options.items())},
            "keyframe_every": self.keyframe_every,
            "ill_posed_every": self.ill_posed_every,
            "sinks": sorted(self.sinks),
        }


def option_help(model: type[BaseSettings], name: str) -> str:
    """Field ``name``'s description as its command-line help, with the default where it has one."""
    field = model.model_fields[name]
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    if default in (None, []) or isinstance(default, bool):  # none, or said by the flag's name (--no-resume)
        return field.description or ""
    return f"{field.description} (default {','.join(default) if isinstance(default, list) else default})"


def parse_yaml(text: str, source: str, what: str, error: type[PipelineError] = PipelineError) -> Any:
    """YAML (or JSON, its subset) ``text`` as plain data; ``error`` names ``source`` and the reason, on one line."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise error(source, f"{what} is not valid YAML/JSON ({exc.problem or exc.context}{where})") from None
    except yaml.YAMLError as exc:
        raise error(source, f"{what} is not valid YAML/JSON ({' '.join(str(exc).split())})") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise error(source, f"{what} nests too deep to be read") from None


def sink_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_stream_options(parser: argparse.ArgumentParser, model: type[StreamOptions]) -> None:
    """The options of every stream, ``run``'s and ``live``'s, their help from ``model``'s fields; each left
    unset (None) falls back to --config, then XSAM_PIPELINE_* variables, then the field's default."""
    parser.add_argument("--config", type=Path, help=option_help(model, "config"))
    parser.add_argument("--out", type=Path, help=option_help(model, "out_dir"))
    parser.add_argument("--segmenter", help=option_help(model, "segmenter"))
    parser.add_argument("--checkpoint", help="X-SAM checkpoint folder, .bin or hub id (with --segmenter xsam)")
    parser.add_argument("--keyframe-every", type=int, metavar="K", help=option_help(model, "keyframe_every"))
    parser.add_argument("--ill-posed-every", type=int, metavar="N", help=option_help(model, "ill_posed_every"))
    parser.add_argument("--sink", action="append", type=sink_list, metavar="NAMES", help=option_help(model, "sinks"))
    parser.add_argument("--max-pending", type=int, metavar="N", help=option_help(model, "max_pending"))
    parser.add_argument("--segmenter-placement", choices=("auto", "pool", "inline"),
                        help=option_help(model, "segmenter_placement"))
    parser.add_argument("--address", help=option_help(model, "address"))


def stream_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The stream options given on the command line (None: not given)."""
    return dict(config=args.config, out_dir=args.out, segmenter=args.segmenter,
                segmenter_options={"checkpoint": args.checkpoint} if args.checkpoint else None,
                keyframe_every=args.keyframe_every, ill_posed_every=args.ill_posed_every,
                sinks=[s for group in args.sink for s in group] if args.sink else None, max_pending=args.max_pending,
                segmenter_placement=args.segmenter_placement, address=args.address)


def read_mapping_file(path: Path, what: str, error: type[PipelineError] = PipelineError) -> dict[str, Any]:
    """A YAML (or JSON, its subset) file holding one mapping; ``error`` names the file and reason otherwise."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(str(path), f"{what} does not exist") from None
    except UnicodeDecodeError as exc:
        raise error(str(path), f"{what} is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})") from None
    except OSError as exc:
        raise error(str(path), f"{what} cannot be read ({exc.strerror or exc})") from None
    data = parse_yaml(text, str(path), what, error)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(str(path), f"{what} must be a mapping (a JSON object)")
    return data
