"""What the benchmark runs on: sizes, lengths and clip variants (:class:`BenchConfig`), and its log line."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from bench.clips import ClipSpec

#: Clip variants cycled over the streams: plain, occluded, another kind, faster motion.
_VARIANTS: tuple[dict[str, Any], ...] = ({}, {"occlusion": True}, {"kinds": ("blue_tile",)}, {"speed": 2.5})


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)



@dataclass
class BenchConfig:
    """Every size and length the benchmark uses; ``quick()`` gives the < 1 minute variant."""

    quick: bool = False
    width: int = 1280  # 720p: what archives hold; at 320x240 `segment` costs less than a flow step
    height: int = 720
    frames: int = 450  # per clip, for decode / segmenter / pipeline / naive
    streams: int = 4
    split_frames: int = 1800  # the split section's one long video
    sweep_sizes: tuple[tuple[int, int], ...] = ((320, 240), (640, 480), (1280, 720), (1920, 1080))
    sweep_objects: tuple[int, ...] = (1, 4)
    sweep_frames: int = 30  # per sweep clip: 8 clips through three methods take ~45 s of the full run
    keyframe_every: int = 10
    micro_frames: int = 60  # frames timed per segmenter step
    live_feeds: int = 2  # the live section's feeds, each 640x480 at 30 fps
    live_seconds: float = 8.0  # its measured window per runtime, after live_warmup_s of every feed running
    live_warmup_s: float = 2.0
    live_load: int = 0  # busy processes at the normal priority beside the feeds: another user of the machine
    mem_lengths: tuple[int, ...] = (1000, 10000, 30000)
    mem_width: int = 160
    mem_height: int = 120
    loop_unit: int = 250  # frames of the clip the memory section loops
    sample_s: float = 0.2  # RSS sampling period
    store_sample_s: float = 0.5  # object-store sampling period
    cache_dir: str = field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "xsam-bench-cache"))
    work_dir: str | None = None  # pipeline outputs; a temporary folder when None
    keep_outputs: bool = False
    warmup: bool = True  # a tiny untimed job before the timed pipeline runs (first-use costs)

    @classmethod
    def quick_config(cls, **overrides: Any) -> "BenchConfig":
        base = dict(quick=True, width=320, height=240, frames=60, split_frames=300, micro_frames=20, mem_lengths=(200, 600),
                    loop_unit=100, warmup=False, sweep_sizes=cls.sweep_sizes[:2], live_seconds=3.0,
                    live_warmup_s=1.0)
        return cls(**{**base, **overrides})

    def clip_specs(self) -> list[ClipSpec]:
        return [
            ClipSpec(seed=i + 1, width=self.width, height=self.height, num_frames=self.frames, **_VARIANTS[i % len(_VARIANTS)])
            for i in range(max(1, self.streams))
        ]


def cores() -> int:
    return os.cpu_count() or 1



def load() -> float:
    """The machine's one-minute load average, logged beside each section (the machines are shared)."""
    return round(os.getloadavg()[0], 2)
