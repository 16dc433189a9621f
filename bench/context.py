"""What the sections of one run share: the config, the work folder, the clips and the pipeline's figures."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.clips import ClipSpec
from bench.config import BenchConfig, log
from bench.videos import BenchClip, make_bench_clips


class Context:
    """What sections share within one run: the config, the clips and the pipeline's figures."""

    def __init__(self, cfg: BenchConfig) -> None:
        self.cfg = cfg
        self._tmp = None if cfg.work_dir else tempfile.TemporaryDirectory(prefix="xsam-bench-")
        self.work = Path(cfg.work_dir or self._tmp.name)
        self.work.mkdir(parents=True, exist_ok=True)
        self._clips: list[BenchClip] | None = None
        self._warmup: BenchClip | None = None
        self.pipeline_runs: dict[str, dict[str, Any]] = {}

    def clips(self) -> list[BenchClip]:
        if self._clips is None:
            log(f"rendering {self.cfg.streams} clips of {self.cfg.frames} frames at {self.cfg.width}x{self.cfg.height}")
            self._clips = make_bench_clips(self.cfg.clip_specs(), self.work / "clips")
        return self._clips

    def warmup_clip(self) -> BenchClip:
        if self._warmup is None:
            spec = ClipSpec(seed=99, width=self.cfg.width, height=self.cfg.height, num_frames=20)
            self._warmup = make_bench_clips([spec], self.work / "warmup-clip")[0]
        return self._warmup

    def close(self) -> None:
        if self._tmp is not None and not self.cfg.keep_outputs:
            self._tmp.cleanup()

