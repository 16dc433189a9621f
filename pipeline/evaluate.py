"""``xsam-pipeline eval``: the DAVIS semi-supervised protocol on a DAVIS-layout folder, scored as DAVIS scores it.

Every sequence (``ROOT/JPEGImages/<resolution>/<sequence>/``, a frame folder) runs as one video of a normal
job on Ray, prompted with its first frame's annotation (``objects:ROOT/Annotations/<resolution>/<sequence>/
<first>.png``: object k is prompt k and track k). Object k's result on a frame is the pixels where track k is
drawn, the higher score winning overlaps as in the PNG masks; frames between the first and the last are
scored, as davis2017-evaluation does. Reported as its ``global_results-<set>.csv`` (J&F-Mean, J-Mean,
J-Recall, J-Decay, F-Mean, F-Recall, F-Decay: means over every object of every sequence) and
``per-sequence_results-<set>.csv`` (one row per object, ``<sequence>_<k>``, J-Mean and F-Mean), to three
decimals; ``eval.json`` holds every figure per object and per sequence, unrounded.

Annotation pixels of index 255 (DAVIS's void label) count as background, as in the reference; the objects are
the indices of the first frame's annotation.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from operators.errors import IMAGE_READ_ERRORS, PipelineError
from operators.metrics import ObjectScores, Statistics, object_scores
from operators.records import FrameRecord
from operators.output_files import output_errors, prepare_out_dir, write_output
from operators.sinks.palette_png import paint_values
from pipeline.config import JobConfig
from pipeline.job import run_job
from pipeline.prompts import OBJECTS, VOID_INDEX
from pipeline.sources import frame_files, is_frame_folder

IMAGES, ANNOTATIONS = "JPEGImages", "Annotations"
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
#: The sinks eval runs by default: frames.jsonl is what it scores, the PNG masks are DAVIS's results format.
EVAL_SINKS = ("jsonl", "png")
EVAL_FILE = "eval.json"
#: The protocol scores the frames between the first (whose annotation is the prompt) and the last, as the
#: reference does: a sequence needs at least one.
MIN_FRAMES = 3


@dataclass(frozen=True)
class DavisSequence:
    """One sequence: its frame folder and the annotation of each of its frames, in frame order."""

    name: str
    folder: Path  # its frames
    annotations: list[Path]


@dataclass(frozen=True)
class DavisSet:
    """The sequences of a DAVIS-layout root to evaluate, checked before any work."""

    root: Path
    resolution: str
    name: str  # the set file's stem, or "all"
    sequences: list[DavisSequence]

    @classmethod
    def open(cls, root: Path, resolution: str = "480p", set_file: Path | None = None) -> "DavisSet":
        """``set_file``: one sequence name a line (DAVIS's ``ImageSets/2017/val.txt``); relative to ``root`` if
        not found as given. Without it, every sequence of ``JPEGImages/<resolution>``."""
        images, annotations = root / IMAGES / resolution, root / ANNOTATIONS / resolution
        for folder in (images, annotations):
            if not folder.is_dir():
                raise PipelineError(str(root), f"not a DAVIS layout: {folder.relative_to(root)} is missing "
                                               f"(expected {IMAGES}/{resolution}/<sequence>/ frames and "
                                               f"{ANNOTATIONS}/{resolution}/<sequence>/ annotations)")
        if set_file is None:
            names = sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith("."))
        else:
            names = _read_set(set_file if set_file.exists() else root / set_file)
        if not names:
            raise PipelineError(str(images), "no sequence to evaluate")
        odd = next((n for n in names if n in (".", "..") or Path(n).name != n), None)
        if odd is not None:
            raise PipelineError(str(set_file), f"{odd!r} is not a sequence name (a folder of {IMAGES}/{resolution})")
        sequences = [_sequence(root, images / name, annotations / name) for name in names]
        return cls(root, resolution, "all" if set_file is None else set_file.stem, sequences)

    def write_prompts(self, path: Path) -> Path:
        """A prompt file giving each sequence its first frame's annotation as ``objects:`` prompts."""
        entries = {str(s.folder): [f"{OBJECTS}:{s.annotations[0].resolve()}"] for s in self.sequences}
        write_output(path, json.dumps(entries, indent=1))
        return path


def _read_set(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise PipelineError(str(path), f"set file cannot be read ({exc.strerror or exc})") from None
    return [line.strip() for line in lines if line.strip()]


def _sequence(root: Path, frames: Path, annotations: Path) -> DavisSequence:
    if not is_frame_folder(frames):
        raise PipelineError(str(frames), f"sequence {frames.name} has no frame folder (JPEG/PNG frames) in "
                                         f"{frames.parent.relative_to(root)}")
    files = frame_files(frames)
    if len(files) < MIN_FRAMES:
        raise PipelineError(str(frames), f"sequence {frames.name} has {len(files)} frames: the protocol scores the "
                                         f"frames between the first and the last, so it needs {MIN_FRAMES} or more")
    expected = [annotations / f"{f.stem}.png" for f in files]
    missing = [p for p in expected if not p.is_file()]
    if missing:
        first = missing[0].relative_to(root)
        raise PipelineError(str(annotations), f"sequence {frames.name} has no annotation {first}" + (
            f" (nor for {len(missing) - 1} more frames)" if len(missing) > 1 else "") +
            ": the first frame's is the prompt, every frame's is the ground truth")
    return DavisSequence(frames.name, frames, expected)


def read_indices(path: Path) -> np.ndarray:
    """An annotation's object indices, void (255) as background."""
    try:
        with Image.open(path) as image:
            if image.mode != "P":
                raise PipelineError(str(path), f"annotation is not an indexed (palette) PNG but mode {image.mode}")
            labels = np.array(image)
    except IMAGE_READ_ERRORS as exc:
        raise PipelineError(str(path), f"annotation is not a readable image ({exc})") from None
    labels[labels == VOID_INDEX] = 0
    return labels


def track_map(record: FrameRecord) -> np.ndarray:
    """``(H, W)`` track id of every pixel (0: none), the higher score winning overlaps, as the PNG masks."""
    return paint_values(record.instances, np.maximum(record.instances.track_ids, 0), np.int64)


def score_sequence(sequence: DavisSequence, frames_jsonl: Path) -> dict[int, ObjectScores]:
    """J and F of each first-frame object on the frames the protocol scores (all but the first and last)."""
    lines = frames_jsonl.read_text().splitlines()
    if len(lines) != len(sequence.annotations):
        raise PipelineError(str(frames_jsonl), f"{len(lines)} records for the {len(sequence.annotations)} frames "
                                               f"of sequence {sequence.name}")
    objects = [int(k) for k in np.unique(read_indices(sequence.annotations[0])) if k > 0]
    predicted: dict[int, list[np.ndarray]] = {k: [] for k in objects}
    truth: dict[int, list[np.ndarray]] = {k: [] for k in objects}
    for line, annotation in zip(lines[1:-1], sequence.annotations[1:-1]):
        tracks, indices = track_map(FrameRecord.from_dict(json.loads(line))), read_indices(annotation)
        if tracks.shape != indices.shape:
            raise PipelineError(str(annotation), f"annotation is {indices.shape[1]}x{indices.shape[0]}, the frame "
                                                 f"{tracks.shape[1]}x{tracks.shape[0]}")
        for k in objects:
            predicted[k].append(tracks == k)
            truth[k].append(indices == k)
    return {k: object_scores(predicted[k], truth[k]) for k in objects}


def _stats_dict(stats: Statistics) -> dict[str, float]:
    return {"mean": stats.mean, "recall": stats.recall, "decay": stats.decay}


def _row(objects: Sequence[ObjectScores]) -> list[float]:
    """The global row's figures over ``objects``: J&F-Mean, then J's and F's mean, recall and decay."""
    j = [o.j_statistics for o in objects]
    f = [o.f_statistics for o in objects]
    means = [float(np.mean([getattr(s, field) for s in stats])) for stats in (j, f)
             for field in ("mean", "recall", "decay")]
    return [(means[0] + means[3]) / 2, *means]


@dataclass
class EvalReport:
    davis: DavisSet
    scores: dict[str, dict[int, ObjectScores]]  # sequence -> object -> per-frame J and F
    failed: dict[str, str]  # sequence -> why it has no scores

    def global_row(self) -> list[float]:
        return _row([o for per_object in self.scores.values() for o in per_object.values()])

    def sequence_rows(self) -> list[tuple[str, float, float]]:
        return [(f"{name}_{k}", o.j_statistics.mean, o.f_statistics.mean)
                for name, per_object in self.scores.items() for k, o in per_object.items()]

    def to_dict(self) -> dict:
        sequences = {}
        for name, per_object in self.scores.items():
            sequences[name] = {
                **dict(zip(GLOBAL_COLUMNS, _row(list(per_object.values())))),
                "objects": {str(k): {"J": _stats_dict(o.j_statistics), "F": _stats_dict(o.f_statistics),
                                     "frames_scored": len(o.j)} for k, o in per_object.items()},
            }
        return {
            "root": str(self.davis.root), "resolution": self.davis.resolution, "set": self.davis.name,
            "protocol": "semi-supervised: first-frame annotation as objects: prompts; frames between the first "
                        "and the last scored, as davis2017-evaluation",
            "global": dict(zip(GLOBAL_COLUMNS, self.global_row())) if self.scores else None,
            "sequences": sequences, "failed": self.failed,
        }

    def write(self, out_dir: Path) -> list[Path]:
        """The reference's two CSV files (three decimals; none, and an earlier run's removed, without scores) and
        ``eval.json``."""
        tables = {out_dir / f"global_results-{self.davis.name}.csv": [GLOBAL_COLUMNS, self._formatted_global()],
                  out_dir / f"per-sequence_results-{self.davis.name}.csv": [SEQUENCE_COLUMNS, *self._formatted_rows()]}
        for path, rows in tables.items():
            if self.scores:
                text = io.StringIO(newline="")
                csv.writer(text).writerows(rows)
                write_output(path, text.getvalue())
            else:
                with output_errors(path):
                    path.unlink(missing_ok=True)
        write_output(out_dir / EVAL_FILE, json.dumps(self.to_dict(), indent=1))
        return [*tables, out_dir / EVAL_FILE] if self.scores else [out_dir / EVAL_FILE]

    def _formatted_global(self) -> list[str]:
        return [f"{v:.3f}" for v in self.global_row()] if self.scores else []

    def _formatted_rows(self) -> list[tuple[str, str, str]]:
        return [(n, f"{j:.3f}", f"{f:.3f}") for n, j, f in self.sequence_rows()]

    def table(self) -> str:
        """The global and per-sequence results as the reference prints them."""
        lines = [f"--------------------------- Global results for {self.davis.name} ---------------------------",
                 _aligned([GLOBAL_COLUMNS, self._formatted_global()]),
                 f"\n---------- Per sequence results for {self.davis.name} ----------",
                 _aligned([SEQUENCE_COLUMNS, *self._formatted_rows()])]
        return "\n".join(lines)


def _aligned(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[c])) for row in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).rjust(w) for v, w in zip(row, widths)) for row in rows)


def evaluate(davis: DavisSet, config: JobConfig) -> tuple[EvalReport, list[Path]]:
    """Run every sequence through the job and score it; results are written to ``config.out_dir``."""
    if "jsonl" not in config.sinks:
        raise PipelineError("--sink", "eval scores frames.jsonl: keep the jsonl sink")
    out_dir = prepare_out_dir(config.out_dir)
    prompts = davis.write_prompts(out_dir / f"davis_prompts-{davis.name}.json")
    summary = run_job(config.model_copy(update={"sources": [str(s.folder) for s in davis.sequences],
                                                "prompts": [], "prompts_file": prompts}))
    reports = {Path(v.source).resolve(): v for v in summary.videos}
    scores, failed = {}, {}
    for sequence in davis.sequences:
        report = reports.get(sequence.folder.resolve())
        if report is None or report.status not in ("done", "skipped"):
            failed[sequence.name] = (report.error or {}).get("reason", report.status) if report else "not run"
            continue
        scores[sequence.name] = score_sequence(sequence, out_dir / report.stream_id / "frames.jsonl")
    report = EvalReport(davis, scores, failed)
    return report, report.write(out_dir)
