"""Runs the chosen sections in order with a description of the machine (``python -m bench``).

Every section returns a plain dict. Figures are only comparable within one run (the machines this runs
on are shared and noisy), so every ratio is computed from figures measured in the same run, close
together in time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from bench.config import BenchConfig, cores, load, log
from bench.context import Context
from bench.sections import MODULES, QUICK_SECTIONS, SECTIONS


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, RAM, date, load and the versions that decide the figures."""
    model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024**2, 1)
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cores": cores(),
        "cpu_model": model or platform.processor() or "unknown",
        "ram_gb": ram_gb,
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": {
            "torch": _version("torch"),
            "ray": _version("ray"),
            "av": _version("av"),
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "psutil": _version("psutil"),
        },
    }


def run(cfg: BenchConfig, only: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections (all by default) in the canonical order; returns the JSON-ready result."""
    default = QUICK_SECTIONS if cfg.quick else SECTIONS
    chosen = [s for s in SECTIONS if (s in only if only else s in default)]
    unknown = sorted(set(only or ()) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    started = time.perf_counter()
    result: dict[str, Any] = {"machine": machine_info(), "config": asdict(cfg), "sections": {}}
    ctx = Context(cfg)
    try:
        for name in chosen:
            log(f"section {name} (load {load()})")
            t0 = time.perf_counter()
            section = MODULES[name].run(ctx)
            section["section_s"] = round(time.perf_counter() - t0, 2)
            result["sections"][name] = section
    finally:
        ctx.close()
        with contextlib.suppress(Exception):
            import ray

            if ray.is_initialized():
                ray.shutdown()
    result["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return result
