"""Segmenter implementations behind one interface, built by name."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

from operators.segmenters.base import PromptMemory, Segmenter

SEGMENTERS = ("default", "xsam")


def segmenter_class(name: str = "default") -> type:
    """The class ``build_segmenter(name)`` would instantiate, imported but not built."""
    if ":" in name:
        module_name, _, class_name = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import segmenter {name!r}: {exc}") from None
    if name == "default":
        from operators.segmenters.default import DefaultSegmenter

        return DefaultSegmenter
    if name == "xsam":
        from operators.segmenters.xsam import XSamSegmenter

        return XSamSegmenter
    raise ValueError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)} or give module:Class")


#: A hub id (``owner/name``): only a machine that reaches the hub can check it.
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def check_segmenter(name: str, options: dict[str, Any]) -> None:
    """ValueError naming what is wrong, before anything is built: the segmenter ``name`` cannot be imported,
    or it does not take ``options``."""
    try:
        inspect.signature(segmenter_class(name)).bind(**options)
    except TypeError as exc:
        hint = " (give --checkpoint)" if "missing" in str(exc) and "'checkpoint'" in str(exc) else ""
        raise ValueError(f"segmenter {name!r}: {exc}{hint}") from None


def check_checkpoint(options: dict[str, Any]) -> None:
    """ValueError if the ``checkpoint`` option is a local path that does not exist; only where the segmenter
    is built on this machine (a cluster's nodes have their own files)."""
    checkpoint = options.get("checkpoint")
    if isinstance(checkpoint, (str, Path)) and not Path(checkpoint).exists() and not _HUB_ID.fullmatch(str(checkpoint)):
        raise ValueError(f"checkpoint {checkpoint} does not exist (give a local folder or .bin file, or a hub id "
                         "owner/name)")


def build_segmenter(name: str = "default", **options: Any) -> Segmenter:
    """Build a segmenter by name, or any class given as ``package.module:ClassName``.

    Heavy imports happen only for the one asked for.
    """
    return segmenter_class(name)(**options)


def is_lightweight(name: str) -> bool:
    """Whether the segmenter declares ``lightweight = True``: no weights, tens of ms per keyframe on a CPU core."""
    return bool(getattr(segmenter_class(name), "lightweight", False))


__all__ = ["PromptMemory", "Segmenter", "build_segmenter", "check_checkpoint", "check_segmenter", "is_lightweight",
           "segmenter_class", "SEGMENTERS"]
