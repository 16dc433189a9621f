"""What the sections of one run share: the config, the work folder, the clips and the pipeline's figures."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bench.clips import ClipSpec
from bench.config import BenchConfig, log
from bench.jobs import ensure_ray, run_pipeline
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
        self._ray_warm = False
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

    def warm_ray(self) -> None:
        """Start Ray and, once a run (unless ``cfg.warmup`` is off), an untimed tiny job: the first job pays
        for imports and worker start-up that no later one does."""
        ensure_ray()
        if self.cfg.warmup and not self._ray_warm:
            log("a warm-up job on Ray (not timed)")
            warm = self.warmup_clip()
            run_pipeline([(warm.path, warm.prompt)], self.work / "warmup", self.cfg.keyframe_every, parallel=1)
            self._ray_warm = True

    def close(self) -> None:
        if self._tmp is not None and not self.cfg.keep_outputs:
            self._tmp.cleanup()

