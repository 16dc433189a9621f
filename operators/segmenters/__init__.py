"""Segmenter implementations behind one interface, built by name."""

from __future__ import annotations

import importlib
from typing import Any

from operators.segmenters.base import PromptMemory, Segmenter

SEGMENTERS = ("default", "xsam")


def build_segmenter(name: str = "default", **options: Any) -> Segmenter:
    """Build a segmenter by name, or any class given as ``package.module:ClassName``.

    Heavy imports happen only for the one asked for.
    """
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            segmenter_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import segmenter {name!r}: {exc}") from None
        return segmenter_class(**options)
    if name == "default":
        from operators.segmenters.default import DefaultSegmenter

        return DefaultSegmenter(**options)
    if name == "xsam":
        from operators.segmenters.xsam import XSamSegmenter

        return XSamSegmenter(**options)
    raise ValueError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)} or give module:Class")


__all__ = ["PromptMemory", "Segmenter", "build_segmenter", "SEGMENTERS"]
