"""``xsam``: delegated to ``bench.xsam_bench`` when that module exposes a function returning a dict;
skipped otherwise, with the reason. Only X-SAM tiny runs here (full vs cached path); the full-size
architecture stays in ``python -m bench.xsam_bench``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from bench.context import Context
from bench.report import fmt

NAME = "xsam"
TITLE = "X-SAM tiny, full vs cached path (bench.xsam_bench; full-size: `python -m bench.xsam_bench`)"
DEFINITION = ""

_XSAM_ENTRY_POINTS = ("bench_tiny", "run", "run_bench", "run_benchmark", "bench", "benchmark", "measure")


def run(ctx: Context) -> dict[str, Any]:
    """Call ``bench.xsam_bench`` if it exposes a function returning a dict; else say why not.

    Functions are tried in ``_XSAM_ENTRY_POINTS`` order; one is called only if every required
    parameter is one the harness knows how to fill (``repeats``, ``device`` = CPU, ``quick``).
    Only X-SAM tiny runs here (full vs cached path); the full-size architecture stays in
    ``python -m bench.xsam_bench``.
    """
    if importlib.util.find_spec("bench.xsam_bench") is None:
        return {"skipped": "bench/xsam_bench.py is not present"}
    try:
        module = importlib.import_module("bench.xsam_bench")
        import torch
    except Exception as exc:  # noqa: BLE001
        return {"skipped": f"bench.xsam_bench does not import: {type(exc).__name__}: {exc}"}
    known = {"repeats": 3 if ctx.cfg.quick else 5, "device": torch.device("cpu"), "quick": ctx.cfg.quick}
    for name in _XSAM_ENTRY_POINTS:
        fn = getattr(module, name, None)
        if not callable(fn):
            continue
        params = inspect.signature(fn).parameters
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        required = [p for p in params.values() if p.default is p.empty and p.kind in kinds]
        if any(p.name not in known for p in required) or any(p.kind == p.POSITIONAL_ONLY for p in params.values()):
            continue
        value = fn(**{k: v for k, v in known.items() if k in params})
        if isinstance(value, dict):
            return {"entry_point": f"bench.xsam_bench.{name}", "torch_threads": torch.get_num_threads(), **value}
        return {"skipped": f"bench.xsam_bench.{name}() returned {type(value).__name__}, not a dict"}
    return {"skipped": f"bench.xsam_bench exposes none of {', '.join(_XSAM_ENTRY_POINTS)} with parameters the harness can fill"}



def rows(x: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    if "skipped" in x:
        return [("X-SAM", x["skipped"])]
    return [(k, fmt(v)) for k, v in x.items() if isinstance(v, (int, float, str)) and k != "section_s"]
