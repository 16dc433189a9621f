"""``run`` jobs started from the page: one at a time, in a background thread of the server, on Ray.

The job is :func:`pipeline.job.run_job` with a :class:`~pipeline.config.JobConfig`, exactly as the CLI runs
it; its prompts are written as a prompts file (``prompts.json``, painted prompts beside it) into the job's
output folder, so the same job runs again with ``xsam-pipeline run SOURCES --prompts-file OUT/prompts.json``.
Progress per video is the number of records in its ``frames.jsonl`` (the jsonl sink flushes every line).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from rich.console import Console

from operators.errors import PipelineError, error_record
from operators.output_files import prepare_out_dir, write_output
from pipeline.config import JobConfig
from pipeline.job import STATUSES, SUMMARY_FILE, plan_streams, run_job
from pipeline.sources import open_video
from pipeline.ui.paths import NoSuchPathError, is_source, resolve_inside
from pipeline.ui.prompts import PagePrompt, parse_page_prompts, write_painted
from pipeline.ui.results import ANNOTATED_FILE, FRAMES_FILE, FrameLog, ResultError

PROMPTS_FILE = "prompts.json"
#: The sinks a page job writes: the records the page reads back, and the video to download.
JOB_SINKS = ["jsonl", "mp4"]
#: An output folder's name: one plain component under --out.
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class JobBusyError(PipelineError):
    """A job is running already; the page runs one at a time."""


@dataclass
class Video:
    stream_id: str
    source: Path
    expected_frames: int | None
    log: FrameLog


@dataclass
class PageJob:
    name: str
    out_dir: Path
    videos: dict[str, Video]
    state: str = "running"  # running | done | failed (the job itself stopped: ``error`` says why)
    error: dict | None = None
    summary: dict | None = None
    thread: threading.Thread | None = field(default=None, repr=False)

    def status(self) -> dict:
        reports = {v["stream_id"]: v for v in (self.summary or {}).get("videos", [])}  # checked where read back
        videos = []
        for video in self.videos.values():
            try:
                done = len(video.log)
            except PipelineError:
                done = 0
            report = reports.get(video.stream_id, {})
            videos.append({"stream_id": video.stream_id, "frames_done": done, "expected_frames": video.expected_frames,
                           "status": report.get("status", "running" if done else "queued"), "error": report.get("error"),
                           "fps": report.get("fps"), "browsable": True})
        others = [r for r in reports.values() if r["stream_id"] not in self.videos]  # never started (no prompt, say)
        videos += [{"stream_id": r["stream_id"], "frames_done": 0, "expected_frames": None, "status": r["status"],
                    "error": r.get("error"), "fps": None, "browsable": False} for r in others]
        return {"name": self.name, "state": self.state, "error": self.error, "videos": videos,
                "files": self.files() if self.state != "running" else []}

    def files(self) -> list[str]:
        """The outputs to download, relative to the job's folder."""
        names = [SUMMARY_FILE, PROMPTS_FILE] + [f"{v}/{f}" for v in self.videos for f in (FRAMES_FILE, ANNOTATED_FILE)]
        return [n for n in names if (self.out_dir / n).is_file()]


class JobRunner:
    """Starts page jobs into folders under ``out_root`` and remembers them for their results."""

    def __init__(self, root: Path, out_root: Path, segmenter: str = "default") -> None:
        self.root = root
        self.out_root = out_root
        self.segmenter = segmenter
        self.jobs: dict[str, PageJob] = {}
        self._lock = threading.Lock()

    def start(self, name: str, sources: Sequence[Path], prompts: Sequence[PagePrompt], keyframe_every: int) -> PageJob:
        if not JOB_NAME.fullmatch(name):
            raise PipelineError(name, "an output folder name is letters, digits, '_', '-' and '.', "
                                      "starting with a letter or digit")
        with tempfile.TemporaryDirectory() as scratch:  # bad prompts are refused before the folder is made
            parse_page_prompts(prompts, Path(scratch))
        with self._lock:
            if any(job.state == "running" for job in self.jobs.values()):
                raise JobBusyError(name, "a job is running; wait for it to finish")
            out_dir = prepare_out_dir(resolve_inside(self.out_root, name, must_exist=False))
            write_painted(prompts, out_dir)
            prompts_file = out_dir / PROMPTS_FILE
            write_output(prompts_file, json.dumps({"*": [p.spec for p in prompts]}, indent=1))
            config = JobConfig(sources=[str(s) for s in sources], out_dir=out_dir, prompts_file=prompts_file,
                               segmenter=self.segmenter, keyframe_every=keyframe_every, sinks=JOB_SINKS,
                               progress=False)
            specs, _, _ = plan_streams(config)
            videos = {s.stream_id: Video(s.stream_id, Path(s.source), _declared_frames(Path(s.source)),
                                         FrameLog(out_dir / s.stream_id / FRAMES_FILE)) for s in specs}
            job = PageJob(name, out_dir, videos)
            job.thread = threading.Thread(target=self._run, args=(job, config), name=f"ui-job-{name}", daemon=True)
            self.jobs[name] = job
            job.thread.start()
            return job

    def get(self, name: str) -> PageJob:
        """A job of this session, else a finished one found in its folder under ``out_root``."""
        with self._lock:
            if name not in self.jobs:
                self.jobs[name] = self._load(name)
            return self.jobs[name]

    def names(self) -> list[str]:
        """This session's jobs and the folders under ``out_root`` that hold a job's summary, newest first."""
        folders = [p for p in self.out_root.iterdir() if JOB_NAME.fullmatch(p.name) and (p / SUMMARY_FILE).is_file()
                   and p.resolve().is_relative_to(self.out_root.resolve())]
        found = [p.name for p in sorted(folders, key=lambda p: (p / SUMMARY_FILE).stat().st_mtime, reverse=True)]
        return list(dict.fromkeys([*reversed(self.jobs), *found]))

    def _load(self, name: str) -> PageJob:
        """A finished job from its ``summary.json``, read back and checked: only videos whose folder is inside
        the job's and whose source is under the root can be browsed."""
        out_dir = resolve_inside(self.out_root, name)
        path = out_dir / SUMMARY_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NoSuchPathError(name, "no job in this folder (it has no summary.json)") from None
        except (OSError, ValueError) as exc:
            raise ResultError(str(path), f"not a job summary ({exc})") from None
        reports = data.get("videos") if isinstance(data, dict) else None
        if not isinstance(reports, list):
            raise ResultError(str(path), "not a job summary (no list of videos)")
        kept, videos = [], {}
        for report in reports:
            if not (isinstance(report, dict) and isinstance(report.get("stream_id"), str)
                    and isinstance(report.get("source"), str) and report.get("status") in STATUSES):
                raise ResultError(str(path), f"not a job summary (a video entry is {str(report)[:200]})")
            error = report.get("error") if isinstance(report.get("error"), dict) else None
            fps = report.get("fps") if isinstance(report.get("fps"), (int, float)) else None
            kept.append({"stream_id": report["stream_id"], "status": report["status"], "error": error, "fps": fps})
            source, folder = Path(report["source"]).resolve(), (out_dir / report["stream_id"]).resolve()
            if source.is_relative_to(self.root) and folder.parent == out_dir and is_source(source):
                frames = report.get("frames") if isinstance(report.get("frames"), int) else None
                videos[report["stream_id"]] = Video(report["stream_id"], source, frames, FrameLog(folder / FRAMES_FILE))
        return PageJob(name, out_dir, videos, state="done", summary={"videos": kept})

    def video(self, name: str, stream_id: str) -> Video:
        job = self.get(name)
        if stream_id not in job.videos:
            raise PipelineError(stream_id, f"job {name} has no such video")
        return job.videos[stream_id]

    @staticmethod
    def _run(job: PageJob, config: JobConfig) -> None:
        try:
            summary = run_job(config, console=Console(file=io.StringIO()))
            job.summary, job.state = summary.to_dict(), "done"  # videos that failed say so in their status
        except Exception as exc:  # noqa: BLE001 - the page shows it; the server keeps serving
            job.error, job.state = error_record(exc, job.name), "failed"


def _declared_frames(path: Path) -> int | None:
    """The frame count the container declares, for the progress bar; None where it declares none."""
    try:
        with open_video(path) as video:
            return video.info.frame_count
    except PipelineError:
        return None  # the job reports why it cannot be read
