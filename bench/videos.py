"""The benchmark's videos: synthetic clips encoded with their prompt and ground truth, clips looped
losslessly to any length, and J&F against the truth."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import av
import numpy as np

from bench.clips import ClipSpec, SyntheticClip, make_clip
from bench.config import BenchConfig
from operators.records import Instances, Prompt
from pipeline.sources import open_video


@dataclass
class BenchClip:
    """An encoded clip, its prompt and its ground truth packed 8 pixels a byte (unpacked for scoring)."""

    path: Path
    prompt: Prompt
    frames: int
    shape: tuple[int, int]  # (H, W)
    packed_truth: list[dict[int, np.ndarray]] = field(repr=False)

    @classmethod
    def of(cls, clip: SyntheticClip) -> "BenchClip":
        first_kind = clip.kinds[min(clip.kinds)]
        prompt = clip.suggested_prompt(first_kind, "box")
        packed = [{o: np.packbits(m) for o, m in frame.items()} for frame in clip.masks]
        return cls(clip.path, prompt, clip.num_frames, (clip.spec.height, clip.spec.width), packed)

    def truth(self) -> list[dict[int, np.ndarray]]:
        h, w = self.shape
        return [{o: np.unpackbits(p, count=h * w).reshape(h, w).astype(bool) for o, p in f.items()} for f in self.packed_truth]


def make_bench_clips(specs: Sequence[ClipSpec], folder: Path) -> list[BenchClip]:
    folder.mkdir(parents=True, exist_ok=True)
    return [BenchClip.of(make_clip(spec, folder / f"clip_s{spec.seed}.mp4")) for spec in specs]


def loop_video(src: str | Path, dst: str | Path, times: int) -> Path:
    """Write ``src`` ``times`` times back to back into ``dst`` without re-encoding.

    Each copy's packets are muxed with pts/dts shifted by the clip's span, so the result decodes to
    exactly ``times`` x the source frames with increasing timestamps. The source must start with a
    keyframe (every encoder's output does), so every copy starts decodable.
    """
    src, dst = str(src), Path(dst)
    tmp = dst.with_name(dst.stem + ".partial" + dst.suffix)
    with av.open(src) as probe:
        stream = probe.streams.video[0]
        packets = [(p.pts, p.dts, p.duration) for p in probe.demux(stream) if p.size]
    pts = [p for p, _, _ in packets if p is not None]
    step = next((d for _, _, d in packets if d), None) or (max(pts) - min(pts)) // max(1, len(pts) - 1)
    span = max(pts) - min(pts) + step
    with av.open(src) as template, av.open(str(tmp), "w") as out:
        out_stream = out.add_stream_from_template(template.streams.video[0])
        for copy in range(times):
            offset = copy * span
            with av.open(src) as source:
                for packet in source.demux(source.streams.video[0]):
                    if not packet.size or packet.dts is None:
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    packet.stream = out_stream
                    out.mux(packet)
    tmp.replace(dst)
    return dst


def looped_clip(cfg: BenchConfig, length: int) -> tuple[Path, Prompt, int]:
    """A cached clip of ``length`` frames (rounded up to whole loops of ``cfg.loop_unit``) and its prompt."""
    cache = Path(cfg.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    key = f"loop_{cfg.mem_width}x{cfg.mem_height}_u{cfg.loop_unit}_s7_o3"
    base, meta = cache / f"{key}.mp4", cache / f"{key}.json"
    if not (base.exists() and meta.exists()):
        spec = ClipSpec(seed=7, width=cfg.mem_width, height=cfg.mem_height, num_frames=cfg.loop_unit, occlusion=True,
                        instances_per_kind=3)  # 3 tracked objects, as issue #4 asks
        clip = BenchClip.of(make_clip(spec, base))
        meta.write_text(json.dumps({"box": list(clip.prompt.box)}))
    prompt = Prompt(0, "box", box=tuple(json.loads(meta.read_text())["box"]))
    times = max(1, math.ceil(length / cfg.loop_unit))
    path = cache / f"{key}_x{times}.mp4"
    if not path.exists():
        loop_video(base, path, times)
    return path, prompt, times * cfg.loop_unit



def read_frames(path: str | Path, limit: int | None = None, threads: int = 1) -> list[np.ndarray]:
    images = []
    with open_video(path, threads=threads) as video:
        for frame in video.frames():
            images.append(frame.image)
            if limit is not None and len(images) >= limit:
                break
    return images



def jf(pred: Sequence[Instances], clip: BenchClip, matching: str) -> float:
    """Mean J&F of ``pred`` on the clip's ground truth (``matching``: "track" or "frame")."""
    from operators.metrics import evaluate_clip

    return round(evaluate_clip(pred, clip.truth(), matching=matching).jf_mean, 4)
