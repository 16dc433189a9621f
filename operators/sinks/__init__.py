"""Output sinks, one instance per stream, built by name: ``jsonl``, ``png``, ``mp4``."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from operators.sinks.base import Sink, StreamInfo
from operators.sinks.jsonl import JsonlSink
from operators.sinks.palette_png import PalettePngSink, label_map
from operators.sinks.video import VideoSink

SINKS: dict[str, type] = {"jsonl": JsonlSink, "png": PalettePngSink, "mp4": VideoSink}


def build_sinks(names: Sequence[str], out_dir: str | Path) -> list[Sink]:
    """Build the named sinks writing under ``out_dir``.

    Raises ``ValueError`` for an unknown or repeated name (checked before touching
    the disk) and :class:`~operators.errors.OutputError` when ``out_dir`` cannot
    be created or written.
    """
    unknown = [name for name in names if name not in SINKS]
    if unknown:
        raise ValueError(f"unknown sink {', '.join(map(repr, unknown))}; choose from {', '.join(SINKS)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"sink {', '.join(map(repr, repeated))} named more than once; each would overwrite the other")
    return [SINKS[name](out_dir) for name in names]


__all__ = ["Sink", "StreamInfo", "JsonlSink", "PalettePngSink", "VideoSink", "SINKS", "build_sinks", "label_map"]
