"""``xsam``: X-SAM tiny (random weights, built here) through ``bench.xsam_bench.bench_tiny`` on the CPU: the
full path against the cached-prompt path, one frame and a batch of four, the networks alone beside them.
The full-size architecture is ``python -m bench.xsam_bench`` (a GPU's work)."""

from __future__ import annotations

from typing import Any

from bench.context import Context
from bench.report import fmt

NAME = "xsam"
TITLE = "X-SAM tiny, full vs cached path (bench.xsam_bench; full-size: `python -m bench.xsam_bench`)"
DEFINITION = ""


def run(ctx: Context) -> dict[str, Any]:
    import torch

    from bench.xsam_bench import bench_tiny

    return {"torch_threads": torch.get_num_threads(),
            **bench_tiny(repeats=3 if ctx.cfg.quick else 5, device=torch.device("cpu"))}


def rows(x: dict[str, Any], sections: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, fmt(v)) for k, v in x.items() if isinstance(v, (int, float, str)) and k != "section_s"]
