"""Job configuration: one validated object the CLI, the Python API and deploy files all build."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from operators.association import AssociationConfig
from operators.errors import PipelineError
from operators.keyframes import KeyframeConfig
from operators.segmenters import check_checkpoint, check_segmenter, segmenter_class
from operators.extras import require
from operators.sinks import SINKS, require_sink_packages, sink_kind
from pipeline.sources import DEFAULT_FOLDER_FPS

SINK_NAMES = ("jsonl", "png", "mp4")
ENV_PREFIX = "XSAM_PIPELINE_"


class JobConfig(BaseModel):
    """An archive job: every frame of every source, in order, N sources in parallel."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    sources: list[str] = Field(min_length=1, description="video files, directories or globs")
    recursive: bool = Field(default=False, description="folders' subfolders too; ** in globs matches subfolders")
    out_dir: Path
    prompts: list[str] = Field(default_factory=list, description="prompt specs applied to every video")
    prompts_file: Path | None = None
    segmenter: str = "default"
    segmenter_options: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    keyframe_every: int = Field(default=10, ge=1)
    ill_posed_every: int = Field(default=3, ge=0, description="re-anchoring keyframe interval while a tracked object "
                                 "is flat or striped, where optical flow cannot measure its motion; 0: off")
    sinks: list[str] = Field(default_factory=lambda: ["jsonl", "mp4"], min_length=1)
    decoder: Literal["pyav", "decord"] = "pyav"
    fps: float = Field(default=DEFAULT_FOLDER_FPS, gt=0, description="frame rate of frame-folder videos, whose "
                       "images carry no timestamps: frame i has pts i / fps")
    segmenter_placement: Literal["auto", "pool", "inline"] = Field(
        default="auto", description="segmenter actors (pool) or one segmenter in each stream worker (inline); "
        "auto: inline for the lightweight default segmenter without GPUs")
    workers: int | None = Field(default=None, ge=1, description="segmenter actors; default: one per GPU, else 1")
    parallel: int | None = Field(default=None, ge=1, description="videos at once; default: the cluster's CPUs")
    split: bool | None = Field(default=None, description="split long videos into chunks that several stream workers "
                               "process at once; default: when the job has fewer videos than parallel slots")
    max_pending: int = Field(default=16, ge=1, description="decoded frames a stream may hold waiting for a keyframe")
    checkpoint_every: int = Field(default=300, ge=0, description="frames between stream checkpoints (0: none)")
    address: str | None = Field(default=None, description="Ray cluster to join; default: start a local one")
    resume: bool = True
    progress: bool = True

    @field_validator("sinks")
    @classmethod
    def _known_sinks(cls, sinks: list[str]) -> list[str]:
        unknown = sorted(s for s in set(sinks) if sink_kind(s) not in SINKS)
        if unknown:
            raise ValueError(f"unknown sink(s) {', '.join(unknown)}; choose from {', '.join(SINK_NAMES)} "
                             "or a redis://HOST:PORT/DB?stream=NAME or mqtt://HOST:PORT/TOPIC URL")
        require_sink_packages(sinks)
        return list(dict.fromkeys(sinks))

    @field_validator("decoder")
    @classmethod
    def _decoder_installed(cls, decoder: str) -> str:
        if decoder == "decord":
            require("decord")
        return decoder

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

    def keyframe_config(self) -> KeyframeConfig:
        return KeyframeConfig(every=self.keyframe_every, ill_posed_every=self.ill_posed_every)

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


def read_mapping_file(path: Path, what: str, error: type[PipelineError] = PipelineError) -> dict[str, Any]:
    """A YAML (or JSON, its subset) file holding one mapping; ``error`` names the file and reason otherwise."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise error(str(path), f"{what} does not exist") from None
    except yaml.YAMLError as exc:
        raise error(str(path), f"{what} is not valid YAML/JSON ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise error(str(path), f"{what} must be a mapping (a JSON object)")
    return data


def _read_config_file(path: Path) -> dict[str, Any]:
    return {str(k).replace("-", "_"): v for k, v in read_mapping_file(path, "config file").items()}


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """``XSAM_PIPELINE_<OPTION>`` variables, values read as YAML (``[jsonl, png]``, ``4``, ``true``)."""
    values = {}
    for name, text in environ.items():
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX):].lower()
            if key not in JobConfig.model_fields:
                raise PipelineError(name, f"unknown option {key!r} in the environment")
            values[key] = yaml.safe_load(text)
    return values


def load_job_config(
    path: Path | None = None, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] = os.environ
) -> JobConfig:
    """A job config from a YAML file, then ``XSAM_PIPELINE_*`` variables, then explicit overrides (None = unset)."""
    values = _read_config_file(path) if path else {}
    values.update(_from_environment(environ))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return JobConfig(**values)
