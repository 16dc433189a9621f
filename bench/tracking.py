"""Tracking-accuracy benchmark (issue #4, item 5): identity and mask quality on hard synthetic clips.

    python -m bench.tracking [--clips 10] [--frames 120] [--keyframe-every 10] [--json PATH]
                             [--keep-clips DIR [--reuse-clips]]

A fixed-seed set of clips (:func:`clip_specs`) covers several objects of two kinds,
real-image backgrounds, exits and re-entries, scene cuts and an occluder. Each clip
runs through the project's stream processor in-process (``StreamProcessor`` +
``run_stream`` + ``local_submit(build_segmenter("default"))``, frames decoded by
``pipeline.sources.open_video``), with one box prompt on the first instance of
each kind on frame 0. Per clip and overall it reports:

* J&F (DAVIS, ``operators.metrics.evaluate_clip(..., matching="track")``: one
  track per object for the whole clip, so identity losses cost J&F too);
* CLEAR-MOT ID switches (split into re-entries under a new id and switches while
  visible), IDF1, MOTA (``operators.identity_metrics``, mask IoU >= 0.5);
* keyframes by reason (``processor.stats.keyframe_reasons``);
* memory over time, after every frame, sampled: the prompt encodings alone
  (``sum(m.nbytes() for m in processor.memories)``) and the stream's whole
  identity memory (``processor.memory_nbytes()``: encodings plus, since the
  per-track appearance banks, every live or recently absent track's bank);
  their growth shows whether memory stays bounded;
* diagnostics: for each exiting object whether it kept its id on return, and the
  switches within one keyframe interval after a scene cut.

JSON goes to stdout (and ``--json PATH``), the table to stderr. libx264 does not
always encode the same frames to the same bytes, so figures can move a little
from run to run; ``--keep-clips DIR --reuse-clips`` runs on the same files, which
makes runs (e.g. before and after a pipeline change) exactly comparable.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.clips import ClipSpec, SyntheticClip, make_clip
from operators.identity_metrics import identity_scores
from operators.keyframes import KeyframeConfig
from operators.metrics import evaluate_clip
from operators.records import FrameRecord
from operators.segmenters import build_segmenter
from operators.stream import StreamProcessor, local_submit, run_stream
from pipeline.sources import open_video

#: Targets from issue #4 at K=10.
TARGET_JF = 0.75
TARGET_SWITCHES_PER_CLIP = 1.0


@dataclass(frozen=True)
class Scenario:
    """One clip recipe; :func:`clip_specs` turns it into a :class:`ClipSpec` for a length."""

    name: str
    kinds: tuple[str, str]
    counts: tuple[int, int]
    background: str = "synthetic"
    exits: int = 0
    scene_cut: bool = False
    occlusion: bool = False
    speed: float = 1.5
    scale_change: float = 1.0

    @property
    def features(self) -> list[str]:
        feats = [f"{sum(self.counts)} objects"]
        if self.background == "real":
            feats.append("real bg")
        if self.exits:
            feats.append(f"{self.exits} exit{'s' * (self.exits > 1)}")
        if self.scene_cut:
            feats.append("cut")
        if self.occlusion:
            feats.append("occluder")
        if self.speed > 2 or self.scale_change != 1:
            feats.append("fast+scale")
        return feats


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("two_kinds", ("red_blob", "blue_tile"), (2, 2)),
    Scenario("real_bg", ("red_blob", "yellow_tile"), (3, 2), background="real"),
    Scenario("exits", ("green_blob", "blue_tile"), (3, 2), exits=2),
    Scenario("real_exit", ("red_blob", "blue_tile"), (2, 2), background="real", exits=1),
    Scenario("cut", ("yellow_tile", "green_blob"), (2, 2), scene_cut=True),
    Scenario("real_cut", ("red_blob", "blue_tile"), (2, 3), background="real", scene_cut=True),
    Scenario("real_occluder", ("red_blob", "green_blob"), (2, 2), background="real", occlusion=True),
    Scenario("all", ("red_blob", "blue_tile"), (3, 2), "real", exits=2, scene_cut=True, occlusion=True),
    Scenario("fast_exit", ("blue_tile", "yellow_tile"), (2, 2), "real", exits=1, speed=2.5, scale_change=1.4),
    Scenario("real_exits_cut", ("green_blob", "yellow_tile"), (3, 3), "real", exits=2, scene_cut=True),
)


def clip_specs(clips: int = 10, frames: int = 120, seed: int = 0) -> list[tuple[Scenario, ClipSpec]]:
    """``clips`` specs cycling through :data:`SCENARIOS`, each with its own fixed seed."""
    specs = []
    for i in range(clips):
        scenario = SCENARIOS[i % len(SCENARIOS)]
        n_objects = sum(scenario.counts)
        spec = ClipSpec(
            seed=1000 * seed + 100 + i,
            num_frames=frames,
            kinds=scenario.kinds,
            instances_per_kind=scenario.counts,
            object_size=0.16 if n_objects <= 5 else 0.14,
            speed=scenario.speed,
            scale_change=scenario.scale_change,
            occlusion=scenario.occlusion,
            background=scenario.background,  # type: ignore[arg-type]
            exits=scenario.exits,
            exit_frames=min(20, max(4, frames // 6)),
            scene_cut=round(0.65 * frames) if scenario.scene_cut else None,
        )
        specs.append((scenario, spec))
    return specs


def run_clip(
    clip: SyntheticClip, keyframe_every: int = 10
) -> tuple[list[FrameRecord], StreamProcessor, list[tuple[int, int]]]:
    """The clip through the stream processor in-process.

    Returns the records, the processor and, per frame, (prompt-encoding bytes, ``memory_nbytes()``).
    """
    prompts = [clip.suggested_prompt(kind, "box", prompt_id=i) for i, kind in enumerate(clip.spec.kinds)]
    processor = StreamProcessor(clip.path.stem, str(clip.path), prompts, keyframes=KeyframeConfig(every=keyframe_every))
    records: list[FrameRecord] = []
    memory: list[tuple[int, int]] = []

    def emit(record: FrameRecord) -> None:
        records.append(record)
        memory.append((sum(m.nbytes() for m in processor.memories), processor.memory_nbytes()))

    with open_video(clip.path) as reader:
        run_stream(reader.frames(), processor, local_submit(build_segmenter("default")), emit)
    return records, processor, memory


def _reentries(clip: SyntheticClip, switches: Sequence[Any]) -> list[dict]:
    """For each exiting object: the frames it was out, and whether it came back under its old id."""
    out = []
    for o in clip.exiting:
        absent = clip.absent_frames(o)
        new_id = [s for s in switches if s.object_id == o and s.after_absence]
        out.append(
            {
                "object_id": o,
                "kind": clip.kinds[o],
                "out_frames": [absent[0], absent[-1]] if absent else None,
                "kept_id": not new_id,
                "switch": asdict(new_id[0]) if new_id else None,
            }
        )
    return out


def _memory_samples(memory: Sequence[int], samples: int = 13) -> list[list[int]]:
    frames = sorted({int(round(x)) for x in np.linspace(0, len(memory) - 1, samples)})
    return [[f, int(memory[f])] for f in frames]


def score_clip(scenario: Scenario, clip: SyntheticClip, keyframe_every: int = 10) -> dict[str, Any]:
    """Run one clip and score it: J&F, identity metrics, keyframes, memory and diagnostics."""
    start = time.perf_counter()
    records, processor, memory = run_clip(clip, keyframe_every)
    seconds = time.perf_counter() - start
    predictions = [r.instances for r in records]
    jf = evaluate_clip(predictions, clip.masks, matching="track")
    ids = identity_scores(predictions, clip.masks)
    cut = clip.spec.scene_cut
    after_cut = (
        [asdict(s) for s in ids.switches if cut <= s.frame < cut + keyframe_every] if cut is not None else None
    )
    cut_keyframe = None
    if cut is not None:
        first = next((r for r in records if r.kind == "keyframe" and r.frame_index >= cut), None)
        cut_keyframe = {"frame": first.frame_index, "reason": first.reason} if first else None
    return {
        "name": scenario.name,
        "features": scenario.features,
        "seed": clip.spec.seed,
        "frames": clip.num_frames,
        "objects": len(clip.kinds),
        "kinds": {str(o): k for o, k in clip.kinds.items()},
        "backgrounds": list(clip.backgrounds),
        "scene_cut": cut,
        "jf": jf.jf_mean,
        "j": jf.j_mean,
        "f": jf.f_mean,
        "jf_per_object": {str(o): (float(s.j.mean()) + float(s.f.mean())) / 2 for o, s in jf.objects.items()},
        "id_switches": ids.id_switches,
        "id_switches_after_absence": sum(s.after_absence for s in ids.switches),
        "idf1": ids.idf1,
        "mota": ids.mota,
        "mean_iou": ids.mean_iou,
        "identity": ids.to_dict(),
        "tracks": len({int(t) for p in predictions for t in p.track_ids if t >= 0}),
        "spurious_tracks": len(ids.spurious_tracks),
        "keyframes": processor.stats.keyframes,
        "keyframe_reasons": dict(processor.stats.keyframe_reasons),
        "prompt_memory_bytes": _memory_samples([p for p, _ in memory]),
        "memory_bytes": _memory_samples([m for _, m in memory]),
        "memory_max": int(max(m for _, m in memory)),
        "memory_final": int(memory[-1][1]),
        "reentries": _reentries(clip, ids.switches),
        "switches_after_cut": after_cut,
        "cut_keyframe": cut_keyframe,
        "seconds": seconds,
        "fps": clip.num_frames / seconds,
    }


def _overall(per_clip: Sequence[dict], keyframe_every: int) -> dict[str, Any]:
    reasons: dict[str, int] = {}
    for c in per_clip:
        for k, v in c["keyframe_reasons"].items():
            reasons[k] = reasons.get(k, 0) + v
    reentries = [r for c in per_clip for r in c["reentries"]]
    jf = float(np.mean([c["jf"] for c in per_clip]))
    switches = float(np.mean([c["id_switches"] for c in per_clip]))
    return {
        "clips": len(per_clip),
        "jf": jf,
        "j": float(np.mean([c["j"] for c in per_clip])),
        "f": float(np.mean([c["f"] for c in per_clip])),
        "id_switches_per_clip": switches,
        "id_switches_total": int(sum(c["id_switches"] for c in per_clip)),
        "id_switches_after_absence_total": int(sum(c["id_switches_after_absence"] for c in per_clip)),
        "idf1": float(np.mean([c["idf1"] for c in per_clip])),
        "mota": float(np.mean([c["mota"] for c in per_clip])),
        "reentries": len(reentries),
        "reentries_kept_id": sum(r["kept_id"] for r in reentries),
        "keyframes": int(sum(c["keyframes"] for c in per_clip)),
        "keyframe_reasons": reasons,
        "memory_max": int(max(c["memory_max"] for c in per_clip)),
        "seconds": float(sum(c["seconds"] for c in per_clip)),
        "targets": {
            "keyframe_every": keyframe_every,
            "jf_min": TARGET_JF,
            "switches_per_clip_max": TARGET_SWITCHES_PER_CLIP,
            "jf_met": jf >= TARGET_JF,
            "switches_met": switches <= TARGET_SWITCHES_PER_CLIP,
        },
    }


def _clip_in(folder: Path, name: str, spec: ClipSpec, reuse: bool) -> SyntheticClip:
    """Encode ``spec`` into ``folder`` (with its spec beside it), or reuse an encoding of the same spec."""
    path = folder / f"{name}.mp4"
    sidecar = path.with_suffix(".spec.txt")
    if reuse and path.exists() and sidecar.exists() and sidecar.read_text() == repr(spec):
        return make_clip(spec, path, encode=False)
    clip = make_clip(spec, path)
    sidecar.write_text(repr(spec))
    return clip


def evaluate(
    clips: int = 10,
    frames: int = 120,
    keyframe_every: int = 10,
    seed: int = 0,
    workdir: str | Path | None = None,
    progress: bool = False,
    reuse_clips: bool = False,
) -> dict[str, Any]:
    """Generate the clip set, run every clip and return ``{"config", "clips": [...], "overall"}``.

    Clips go to a temporary folder, or ``workdir``; with ``reuse_clips`` an encoding already there
    of the same spec is used as is, so runs on the same files are exactly comparable (the encoder
    is not bit-reproducible; the ground truth always is).
    """
    per_clip = []
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
        folder = Path(workdir) if workdir is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for i, (scenario, spec) in enumerate(clip_specs(clips, frames, seed)):
            clip = _clip_in(folder, f"{i:02d}_{scenario.name}", spec, reuse_clips and workdir is not None)
            result = score_clip(scenario, clip, keyframe_every)
            per_clip.append(result)
            if progress:
                print(f"[{i + 1}/{clips}] {format_row(result)}", file=sys.stderr, flush=True)
    return {
        "config": {"clips": clips, "frames": frames, "keyframe_every": keyframe_every, "seed": seed,
                   "segmenter": "default", "prompt": "box on the first instance of each kind, frame 0"},
        "clips": per_clip,
        "overall": _overall(per_clip, keyframe_every),
    }


def _reasons(reasons: dict[str, int]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(reasons.items()))


def format_row(c: dict) -> str:
    kept = sum(r["kept_id"] for r in c["reentries"])
    reentry = f"{kept}/{len(c['reentries'])}" if c["reentries"] else "-"
    prompt_kib = c["prompt_memory_bytes"][-1][1] / 1024
    mem = f"{prompt_kib:.0f}k {c['memory_bytes'][0][1] / 1024:.0f}->{c['memory_max'] / 1024:.0f}k"
    return (
        f"{c['name']:<15} {','.join(c['features']):<40} {c['jf']:5.3f} {c['id_switches']:3d} "
        f"{c['id_switches_after_absence']:4d} {reentry:>6} {c['idf1']:5.3f} {c['mota']:6.3f} {c['tracks']:3d} "
        f"{c['spurious_tracks']:3d} {c['keyframes']:3d}  {_reasons(c['keyframe_reasons']):<48} {mem:>13} "
        f"{c['fps']:5.1f}"
    )


def format_table(result: dict) -> str:
    header = (
        f"{'clip':<15} {'features':<40} {'J&F':>5} {'IDs':>3} {'gone':>4} {'reent':>6} {'IDF1':>5} {'MOTA':>6} "
        f"{'trk':>3} {'spu':>3} {'KF':>3}  {'keyframe reasons':<48} {'memory':>13} {'fps':>5}"
    )
    o = result["overall"]
    t = o["targets"]
    lines = [header, "-" * len(header)] + [format_row(c) for c in result["clips"]] + ["-" * len(header)]
    lines.append(
        f"overall ({o['clips']} clips, K={t['keyframe_every']}): J&F {o['jf']:.3f} (target >= {t['jf_min']}: "
        f"{'met' if t['jf_met'] else 'MISSED'}), ID switches/clip {o['id_switches_per_clip']:.2f} "
        f"(target <= {t['switches_per_clip_max']}: {'met' if t['switches_met'] else 'MISSED'}; "
        f"{o['id_switches_after_absence_total']} of {o['id_switches_total']} after an absence), "
        f"IDF1 {o['idf1']:.3f}, MOTA {o['mota']:.3f}, re-entries keeping their id "
        f"{o['reentries_kept_id']}/{o['reentries']}"
    )
    lines.append(f"keyframes {o['keyframes']}: {_reasons(o['keyframe_reasons'])}; "
                 f"stream memory (memory_nbytes) max {o['memory_max']} B; {o['seconds']:.0f} s")
    lines.append("IDs = ID switches (CLEAR-MOT), gone = of them after the object was absent, "
                 "reent = exiting objects back under their id, trk = distinct track ids, spu = tracks never matching "
                 "an object (IoU >= 0.5), KF = keyframes, "
                 "memory = prompt encodings at the end, then memory_nbytes() on frame 0 -> its maximum (KiB)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=10)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--keyframe-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="clip-set seed (0 = the reference set)")
    parser.add_argument("--json", type=Path, help="also write the JSON result here")
    parser.add_argument("--keep-clips", type=Path, help="write the clips here instead of a temporary folder")
    parser.add_argument(
        "--reuse-clips", action="store_true",
        help="with --keep-clips: reuse clips already there for the same spec (exactly repeatable runs)",
    )
    args = parser.parse_args(argv)
    if args.reuse_clips and args.keep_clips is None:
        parser.error("--reuse-clips needs --keep-clips DIR")
    result = evaluate(
        args.clips, args.frames, args.keyframe_every, args.seed, args.keep_clips, progress=True,
        reuse_clips=args.reuse_clips,
    )
    text = json.dumps(result, indent=1, default=float)
    print(text)
    if args.json:
        args.json.write_text(text)
    print(format_table(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
