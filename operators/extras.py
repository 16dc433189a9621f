"""Optional packages: a feature that needs one imports it through :func:`require`, so a missing one is
reported as the extra of pyproject.toml that installs it, not as a bare ``ModuleNotFoundError``."""

from __future__ import annotations

import importlib
from types import ModuleType

#: Per optional module: the extra that installs it and what needs it.
EXTRAS: dict[str, tuple[str, str]] = {
    "redis": ("redis", "redis:// sinks and live --control need"),
    "paho.mqtt.client": ("mqtt", "mqtt:// sinks need"),
    "decord": ("decord", "the decord decoder needs"),
}


class MissingExtraError(ValueError):
    """An optional package is not installed. A ValueError: callers report it as the option that asked for it."""


def require(module: str) -> ModuleType:
    """Import ``module`` (a key of :data:`EXTRAS`); :class:`MissingExtraError` names its extra if it is missing."""
    extra, needs = EXTRAS[module]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{needs} the {extra!r} extra: pip install 'xsam-pipeline[{extra}]'") from None
