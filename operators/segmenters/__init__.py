"""Segmenter implementations behind one interface, built by name."""

from __future__ import annotations

from typing import Any

from operators.segmenters.base import PromptMemory, Segmenter

SEGMENTERS = ("default", "xsam")


def build_segmenter(name: str = "default", **options: Any) -> Segmenter:
    """Build a segmenter by name; heavy imports happen only for the one asked for."""
    if name == "default":
        from operators.segmenters.default import DefaultSegmenter

        return DefaultSegmenter(**options)
    if name == "xsam":
        from operators.segmenters.xsam import XSamSegmenter

        return XSamSegmenter(**options)
    raise ValueError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")


__all__ = ["PromptMemory", "Segmenter", "build_segmenter", "SEGMENTERS"]
