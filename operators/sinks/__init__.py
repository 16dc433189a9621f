"""Output sinks, one instance per stream, built by name: ``jsonl``, ``png``, ``mp4``, ``redis``, ``mqtt``.

A message-queue sink is named by its URL (``redis://127.0.0.1:6379/0?stream=frames``,
``mqtt://127.0.0.1:1883/xsam/{stream_id}``); the bare names ``redis`` and ``mqtt`` mean the local
default broker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from operators.extras import require
from operators.sinks.base import Sink, StreamInfo
from operators.sinks.jsonl import JsonlSink
from operators.sinks.mqtt import MqttSink
from operators.sinks.palette_png import PalettePngSink, label_map
from operators.sinks.redis_stream import RedisStreamSink
from operators.sinks.video import VideoSink

SINKS: dict[str, type] = {"jsonl": JsonlSink, "png": PalettePngSink, "mp4": VideoSink, "redis": RedisStreamSink,
                        "mqtt": MqttSink}

#: URL schemes naming a message-queue sink, and the sink name each maps to.
SINK_SCHEMES = {"redis://": "redis", "rediss://": "redis", "unix://": "redis", "mqtt://": "mqtt"}
#: The optional package (:mod:`operators.extras`) each broker sink imports.
SINK_PACKAGES = {"redis": "redis", "mqtt": "paho.mqtt.client"}


def sink_kind(name: str) -> str:
    """The sink name for ``name``: itself, or the sink a URL's scheme names."""
    return next((kind for scheme, kind in SINK_SCHEMES.items() if name.startswith(scheme)), name)


def require_sink_packages(names: Sequence[str]) -> None:
    """Import the optional packages the named sinks need: a missing one fails before any work starts."""
    for kind in {sink_kind(name) for name in names} & SINK_PACKAGES.keys():
        require(SINK_PACKAGES[kind])


def build_sinks(names: Sequence[str], out_dir: str | Path | None) -> list[Sink]:
    """Build the named sinks, the file sinks writing under ``out_dir`` (broker sinks take none).

    Raises ``ValueError`` for an unknown or repeated name (checked before touching the disk) and
    :class:`~operators.errors.OutputError` when ``out_dir`` cannot be created or written.
    """
    unknown = [name for name in names if sink_kind(name) not in SINKS]
    if unknown:
        raise ValueError(f"unknown sink {', '.join(map(repr, unknown))}; choose from {', '.join(SINKS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"sink {', '.join(map(repr, repeated))} named more than once; each would overwrite the other")
    return [_build(name, out_dir) for name in names]


def file_sinks(names: Sequence[str]) -> list[str]:
    """The names among ``names`` of sinks that write files (not a message queue)."""
    return [name for name in names if sink_kind(name) not in SINK_SCHEMES.values()]


def _build(name: str, out_dir: str | Path | None) -> Sink:
    kind = sink_kind(name)
    if kind == "redis":
        return RedisStreamSink(name if name != "redis" else "redis://127.0.0.1:6379/0")
    if kind == "mqtt":  # the URL is the sink's configuration; bare "mqtt" means the local default broker
        return MqttSink(name) if name != "mqtt" else MqttSink()
    return SINKS[kind](out_dir)


__all__ = ["Sink", "StreamInfo", "JsonlSink", "PalettePngSink", "VideoSink", "RedisStreamSink", "SINKS", "build_sinks",
           "file_sinks", "label_map", "require_sink_packages", "sink_kind"]
