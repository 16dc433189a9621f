"""``live``'s options: the stream options every command shares (:class:`pipeline.config.StreamOptions`) and
the feed's, layered as ``run``'s are (flags, then ``XSAM_PIPELINE_*`` variables, then ``--config``). The
per-feed defaults are :class:`~pipeline.live.stream.LiveStreamSpec`'s."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from operators.extras import require
from pipeline.config import StreamOptions
from pipeline.control.commands import DEFAULT_SCHEMES, KNOWN_SCHEMES
from pipeline.live.stream import LiveStreamSpec

_SHARED = StreamOptions.model_fields


class LiveConfig(StreamOptions):
    """A live service: feeds read until stopped, each a stream of its own."""

    sources: list[str] = Field(default_factory=list, description="live URLs or /dev/videoN devices (files are read "
                               "once as a feed); none: an empty service that --api-port or --control adds streams to")
    prompts: list[str] = Field(default_factory=list, description="prompt specs applied to every stream given here")
    # mp4 is complete only when its stream ends: a feed's default output is frames.jsonl, growing as it runs.
    sinks: list[str] = Field(default_factory=lambda: ["jsonl"], min_length=1, description=_SHARED["sinks"].description)
    max_pending: int = Field(default=LiveStreamSpec.max_pending, ge=1, description=_SHARED["max_pending"].description)
    latency_budget: float | None = Field(default=LiveStreamSpec.latency_budget, gt=0, description="drop frames older "
                                         "than S seconds when newer ones wait")
    queue_size: int = Field(default=LiveStreamSpec.queue_size, ge=1, description="decoded frames waiting per stream")
    mode: Literal["live", "archive"] = Field(default=LiveStreamSpec.mode, description="archive: never drop frames")
    runtime: Literal["ray", "in-process"] = Field(default="ray", description="ray: each feed in a stream actor over "
                                                  "the cluster's nodes, restarted on another node if it dies (starts "
                                                  "a local Ray unless --address); in-process: every feed on threads "
                                                  "of this process")
    snapshot_every: float = Field(default=5.0, ge=0, description="save each feed's prompt memory and tracks every S "
                                  "seconds in OUT/<stream>/, where a restarted stream actor continues from (0: never)")
    timeout: float = Field(default=LiveStreamSpec.timeout, gt=0, description="open/read timeout in seconds")
    rtsp_transport: Literal["tcp", "udp"] = Field(default="tcp", description="RTSP's transport")
    max_reconnects: int | None = Field(default=None, ge=0, description="give a stream up after N failed reconnects "
                                       "in a row; default: never")
    duration: float | None = Field(default=None, gt=0, description="stop after S seconds; default: until interrupted")
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="serve Prometheus metrics on "
                                     "ADDRESS:PORT")
    metrics_address: str = Field(default="127.0.0.1", description="the address the metrics are served on (0.0.0.0 "
                                 "for a scraper elsewhere)")
    control: str | None = Field(default=None, description="read control commands from a Redis stream: "
                                "redis://HOST:PORT/DB?stream=NAME (docs/live.md)")
    api_port: int | None = Field(default=None, ge=0, le=65535, description="serve the HTTP control API on ADDRESS:P "
                                 "(docs/live.md, HTTP API)")
    api_address: str = Field(default="127.0.0.1", description="the address the HTTP API is served on (it has no "
                             "authentication)")
    allow_schemes: list[str] = Field(default_factory=lambda: list(DEFAULT_SCHEMES), description="URL schemes a "
                                     f"stream added by --api-port or --control may use, of {', '.join(KNOWN_SCHEMES)} "
                                     "(device: /dev/videoN); http(s) would let a client make the service fetch any "
                                     "URL it can reach")
    allow_files: bool = Field(default=False, description="let --api-port and --control add local files as streams "
                              "and read prompt images by path")

    @field_validator("control")
    @classmethod
    def _redis_installed(cls, control: str | None) -> str | None:
        if control is not None:
            require("redis")
        return control

    @field_validator("allow_schemes", mode="before")
    @classmethod
    def _comma_separated(cls, schemes: object) -> object:
        return [s.strip().lower() for s in schemes.split(",") if s.strip()] if isinstance(schemes, str) else schemes
