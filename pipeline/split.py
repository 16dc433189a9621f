"""One video over several stream workers: which videos a job splits, their chunks, and the joined outputs.

A job with fewer videos than parallel slots (or ``--split``) splits each long video into chunks
(:func:`operators.chunking.plan_chunks`) that different stream workers process at once. Every chunk is a
stream of its own under ``<out>/<video>/chunks/<k>/``, with its own checkpoints and ``done.json``, so a
chunk whose worker died resumes alone. The first chunk runs as the unsplit video would; the later ones
start with a keyframe on the prompts' memories, encoded once for them all
(:meth:`pipeline.runtime.StreamWorker.encode_prompts`). When every chunk is in, :func:`join_chunks`
streams the chunks' records in frame order, each chunk's track ids stitched to the one before's by mask
IoU on the frames they share (:class:`operators.chunking.TrackStitcher`), into the files an unsplit run
writes (``frames.jsonl``, ``masks/``, ``annotated.mp4``), and removes the chunks' folders.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from operators.chunking import Chunk, TrackStitcher, match_tracks, plan_chunks
from operators.errors import OutputError, PipelineError
from operators.records import FrameRecord, Instances
from operators.sinks import StreamInfo, VideoSink, sink_kind
from operators.output_files import open_output, output_errors, stream_dir
from operators.sinks.palette_png import mask_path, save_labels
from operators.stream import StreamStats
from operators.video_writer import join_mp4
from pipeline.checkpoint import write_done
from pipeline.session import CHUNKS_FOLDER, StreamReport, StreamSpec
from pipeline.sources import open_video

#: The sinks whose files the chunks' can be joined into; a job with a message-queue sink is not split.
SPLIT_SINKS = ("jsonl", "png", "mp4")
#: Frames a chunk owns at least: a shorter one's overlap and start-up would outweigh what it saves.
MIN_CHUNK_FRAMES = 150


def can_split(sinks: list[str]) -> bool:
    return all(sink_kind(name) in SPLIT_SINKS for name in sinks)


def chunk_counts(split: bool | None, videos: int, slots: int) -> list[int]:
    """Chunks for each of ``videos`` videos: the ``slots`` shared out where there are more slots than videos
    (``split`` None, automatic), at least two each (``split`` True), none (False or too few slots)."""
    if split is False or videos == 0 or (split is None and videos >= slots):
        return [1] * videos
    counts = [slots // videos + (i < slots % videos) for i in range(videos)]
    return [max(2, c) for c in counts] if split else counts


def _frame_count(spec: StreamSpec) -> int | None:
    with open_video(spec.source, backend=spec.decoder, folder_fps=spec.folder_fps) as reader:
        return reader.info.frame_count


def plan_video(spec: StreamSpec, count: int, overlap: int) -> list[Chunk]:
    """``spec``'s chunks (one: not split): at most ``count``, each owning ``MIN_CHUNK_FRAMES`` or more, the
    later ones starting after every prompt's frame. A video whose container declares no frame count, or
    that cannot be opened (its worker then names why), is not split."""
    try:
        frames = _frame_count(spec) if count > 1 else None
    except PipelineError:
        frames = None
    if frames is None or frames < 2 * MIN_CHUNK_FRAMES:
        return [Chunk(0, 0, None, 0)]
    first_free = max((p.frame_index for p in spec.prompts), default=0) + 1
    return plan_chunks(frames, min(count, frames // MIN_CHUNK_FRAMES), overlap, first_free)


@dataclass
class SplitVideo:
    """A video split into chunks: their specs, the reports that came in, the frame count it was planned on."""

    spec: StreamSpec
    chunks: list[StreamSpec]
    reports: dict[int, StreamReport] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: StreamSpec, chunks: list[Chunk]) -> "SplitVideo":
        sinks = list(spec.sinks) + ([] if "jsonl" in spec.sinks else ["jsonl"])  # the join reads the records
        specs = [dataclasses.replace(spec, chunk=chunk, sinks=sinks, prompts=spec.prompts if chunk.index == 0 else [],
                                     fingerprint={**spec.fingerprint, "chunk": chunk.to_dict()})
                 for chunk in chunks]
        return cls(spec, specs)

    def give_memories(self, memories: list) -> None:
        for chunk in self.chunks[1:]:
            chunk.start_memories = memories

    def collect(self, chunk: StreamSpec, report: StreamReport) -> StreamReport | None:
        """Note a chunk's report; the video's, joined or failed, once every chunk's is in."""
        self.reports[chunk.chunk.index] = report
        if len(self.reports) < len(self.chunks):
            return None
        failed = next((r for _, r in sorted(self.reports.items()) if r.status not in ("done", "skipped")), None)
        if failed is not None:
            return self._report("failed", error=failed.error)
        started = time.perf_counter()
        try:
            outputs, stats = join_chunks(self.spec, [c.chunk for c in self.chunks])
        except (PipelineError, ValueError) as exc:
            error = exc.to_dict() if isinstance(exc, PipelineError) else PipelineError(self.spec.source, str(exc)).to_dict()
            return self._report("failed", error=error)
        report = self._report("done", outputs=outputs, stats=stats, seconds=time.perf_counter() - started)
        write_done(self.spec.stream_dir, self.spec.fingerprint, report.to_dict())
        shutil.rmtree(self.spec.stream_dir / CHUNKS_FOLDER, ignore_errors=True)
        return report

    def _report(self, status: str, error: dict | None = None, outputs: list[dict] | None = None,
                stats: StreamStats | None = None, seconds: float = 0.0) -> StreamReport:
        reports = [self.reports[c.chunk.index] for c in self.chunks]
        report = StreamReport(
            self.spec.stream_id, self.spec.source, status, error=error, outputs=outputs or [],
            seconds=max(r.seconds for r in reports) + seconds, attempts=max(r.attempts for r in reports),
            prompt_memory_bytes=max(r.prompt_memory_bytes for r in reports),
            warnings=[w for r in reports for w in r.warnings],
            chunks=[{**c.chunk.to_dict(), "status": r.status, "frames": r.frames, "attempts": r.attempts,
                     "resumed_from": r.resumed_from, "seconds": round(r.seconds, 3)}
                    for c, r in zip(self.chunks, reports)])
        last = self.chunks[-1].chunk
        report.expected_frames = None if reports[-1].expected_frames is None else (
            last.start + reports[-1].expected_frames)
        report.concealed_frames = sorted({f for c, r in zip(self.chunks, reports) for f in r.concealed_frames
                                          if f >= c.chunk.own_from and (c.chunk.stop is None or f < c.chunk.stop)})
        if stats is not None:
            report.frames, report.keyframes, report.propagated = stats.frames, stats.keyframes, stats.propagated
            report.skipped_frames, report.keyframe_reasons = stats.skipped, dict(stats.keyframe_reasons)
        return report


@dataclass
class _Kind:
    """What :meth:`StreamStats.count` reads of a record, without decoding its masks."""

    kind: str
    reason: str | None


def _lines(path: Path) -> Iterator[tuple[bytes, dict]]:
    try:
        with open(path, "rb") as file:
            for line in file:
                yield line, json.loads(line)
    except FileNotFoundError:
        raise OutputError(str(path), "a finished chunk's records are missing") from None
    except ValueError as exc:
        raise OutputError(str(path), f"a chunk's records are unreadable ({exc})") from None


def _link(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s file (a hard link: the chunk's copy stays until the join is done)."""
    with output_errors(target):
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def join_chunks(video: StreamSpec, chunks: list[Chunk]) -> tuple[list[dict], StreamStats]:
    """Write ``video``'s outputs from its chunks' (``<video>/chunks/<k>/``), every frame once and in order,
    track ids stitched across each boundary; what was written (as the sinks say) and the records' counts.

    Memory stays flat: one record at a time, and the masks of the frames two chunks share.
    """
    root = Path(video.out_dir) / video.stream_id / CHUNKS_FOLDER
    video_dir = stream_dir(Path(video.out_dir), video.stream_id)
    kinds = [sink_kind(name) for name in video.sinks]
    masks_dir = stream_dir(Path(video.out_dir), video.stream_id, "masks") if "png" in kinds else None
    jsonl = video_dir / "frames.jsonl"
    partial = jsonl.with_name(jsonl.name + ".partial")
    stitcher, stats = TrackStitcher(), StreamStats()
    shared: dict[int, Instances] = {}  # the earlier chunk's records of the frames the next one shares
    relabelled: set[int] = set()  # chunks whose ids changed somewhere: their MP4 frames are drawn again
    expected = 0
    with output_errors(partial), open_output(partial) as out:
        for chunk, following in zip(chunks, [*chunks[1:], None]):
            later: dict[int, Instances] = {}
            started = chunk.index == 0
            for line, record in _lines(root / chunk.label / "frames.jsonl"):
                index = record["frame_index"]
                if index < chunk.own_from:
                    later[index] = FrameRecord.from_dict(record).instances
                    continue
                if not started:
                    frames = sorted(set(shared) & set(later))
                    stitcher.start_chunk(match_tracks([shared[i] for i in frames], [later[i] for i in frames]))
                    shared, started = {}, True
                if index != expected:
                    raise PipelineError(video.source, f"chunk {chunk.label} has frame {index} where frame {expected} "
                                        "belongs: the chunks do not join", index)
                if following is not None and index >= following.start:
                    shared[index] = FrameRecord.from_dict(record).instances  # this chunk's own ids
                if stitcher.remap(record):
                    relabelled.add(chunk.index)
                    line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
                    if masks_dir is not None:
                        _relabel(mask_path(root / chunk.label / "masks", index), mask_path(masks_dir, index),
                                 stitcher.slot_table())
                elif masks_dir is not None:
                    _link(mask_path(root / chunk.label / "masks", index), mask_path(masks_dir, index))
                out.write(line)
                stats.count(_Kind(record["kind"], record["reason"]))
                expected += 1
    outputs = []
    for kind in kinds:
        if kind == "jsonl":
            outputs.append({"sink": "jsonl", "path": str(jsonl), "frames": expected, "frames_kept": 0})
        elif kind == "png":
            outputs.append({"sink": "png", "path": str(masks_dir), "frames": expected})
        else:
            outputs.append(_join_video(video, chunks, relabelled, partial))
    with output_errors(jsonl):
        if "jsonl" in kinds:
            os.replace(partial, jsonl)
        else:
            partial.unlink()
    return outputs, stats


def _relabel(source: Path, target: Path, table: np.ndarray) -> None:
    """A chunk's PNG mask with its palette slots looked up in ``table`` (chunk's track slot -> video's)."""
    with output_errors(source), Image.open(source) as image:
        labels = np.asarray(image)
    with output_errors(target):
        target.unlink(missing_ok=True)
    save_labels(table[labels], target)


def _join_video(video: StreamSpec, chunks: list[Chunk], relabelled: set[int], records: Path) -> dict:
    """``annotated.mp4`` from each chunk's, less the frames it shares with the one before; a chunk whose ids
    were stitched to others is drawn again from the source frames and the joined records (its colours
    follow the ids)."""
    root = Path(video.out_dir) / video.stream_id / CHUNKS_FOLDER
    parts, skip = [], []
    for chunk in chunks:
        if chunk.index in relabelled:
            parts.append(_redraw(video, chunk, records))
            skip.append(0)
        else:
            parts.append(root / chunk.label / "annotated.mp4")
            skip.append(chunk.own_from - chunk.start)
    path = Path(video.out_dir) / video.stream_id / "annotated.mp4"
    with output_errors(path):
        frames = join_mp4(parts, path, skip)
    return {"sink": "mp4", "path": str(path), "frames": frames}


def _redraw(video: StreamSpec, chunk: Chunk, records: Path) -> Path:
    """The chunk's own frames drawn again with the video's track ids, as one joinable part."""
    root = Path(video.out_dir) / video.stream_id / CHUNKS_FOLDER
    name = f"{chunk.label}.redrawn"
    sink = VideoSink(root)
    with open_video(video.source, backend=video.decoder, folder_fps=video.folder_fps) as reader:
        info = reader.info
        sink.open(StreamInfo(name, video.source, info.width, info.height, info.fps), start_frame=chunk.own_from)
        frames = reader.frames(chunk.own_from)
        for _, record in _lines(records):
            if record["frame_index"] < chunk.own_from:
                continue
            if chunk.stop is not None and record["frame_index"] >= chunk.stop:
                break
            frame = next(frames)
            sink.write(dataclasses.replace(FrameRecord.from_dict(record), image=frame.image))
        sink.close()
    return root / name / "annotated.mp4"
