"""The pipeline: archive jobs on Ray, live feeds, and one stream in-process.

One import gives the in-process API (:class:`StreamSession`, SAM 2's calls as :class:`VideoPredictor`)::

    from pipeline import StreamSession
    session = StreamSession.open("clip.mp4", segmenter="default")

They are imported when first used, so the command line does not load them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"StreamSession": "pipeline.session", "StreamReport": "pipeline.session", "StreamSpec": "pipeline.session",
            "VideoPredictor": "pipeline.predictor"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
