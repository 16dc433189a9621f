"""The installed ``xsam-pipeline`` command as a user runs it: exit codes, messages, outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from bench.clips import ClipSpec, make_clip

ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=ENV, cwd=Path(__file__).resolve().parent.parent)


def test_unwritable_output_folder_stops_before_any_work(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = cli("run", str(tmp_path / "any.mp4"), "--prompt", "point:1,1", "--out", str(tmp_path / "file" / "out"))
    assert result.returncode == 2
    assert "file/out" in result.stderr and "Not a directory" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "box:1,2,3"], "a box is x0,y0,x1,y1"),
        (["--prompt", "point:1,1", "--keyframe-every", "0"], "--keyframe-every: Input should be greater than or equal to 1"),
        (["--prompt", "point:1,1", "--sink", "csv"], "unknown sink(s) csv"),
        (["--prompt", "point:1,1", "--config", "/nonexistent/job.yaml"], "config file does not exist"),
        (["--prompt", "point:1,1", "--sink", ""], "--sink: List should have at least 1 item"),
        (["--prompt", "point:1,1", "--segmenter", "nope"], "--segmenter: unknown segmenter 'nope'"),
        (["--prompt", "point:1,1", "--segmenter", "xsam"],
         "--checkpoint: segmenter 'xsam': missing a required argument: 'checkpoint' (give --checkpoint)"),
        (["--prompt", "point:1,1", "--segmenter", "xsam", "--checkpoint", "/nonexistent/ckpt"],
         "--checkpoint: checkpoint /nonexistent/ckpt does not exist"),
        (["--prompt", "point:1,1", "--checkpoint", "/tmp"],
         "segmenter 'default': got an unexpected keyword argument 'checkpoint'"),
    ],
)
def test_bad_options_exit_2_with_the_reason(tmp_path, args, message):
    result = cli("run", str(tmp_path / "any.mp4"), "--out", str(tmp_path / "out"), *args)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists(), "nothing is created before the options are known good"


def test_an_address_nothing_answers_at_fails_the_job_in_words(tmp_path):
    from bench.feeds import free_port

    clip = make_clip(ClipSpec(seed=7, num_frames=5), tmp_path / "walk.mp4")
    address = f"127.0.0.1:{free_port()}"
    result = cli("run", str(clip.path), "--prompt", "point:10,10", "--out", str(tmp_path / "out"), "--address", address)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--address: no Ray cluster answers at {address}" in " ".join(result.stderr.split())
    video = json.loads((tmp_path / "out" / "summary.json").read_text())["videos"][0]
    assert video["status"] == "failed" and video["error"]["source"] == "--address"  # the summary lists it


def test_run_writes_outputs_and_exits_1_when_a_video_fails(tmp_path):
    clip = make_clip(ClipSpec(seed=7, num_frames=20), tmp_path / "walk.mp4")
    box = ",".join(str(int(v)) for v in clip.suggested_prompt(clip.kinds[1], "box").box)
    out = tmp_path / "out"
    result = cli("run", str(clip.path), str(tmp_path / "missing.mp4"), "--prompt", f"box:{box}", "--out", str(out),
                 "--sink", "jsonl,png")
    assert result.returncode == 1, result.stderr
    assert "missing" in result.stderr  # the final table names the failed video
    assert "no such file" in json.loads((out / "summary.json").read_text())["failures"][0]["reason"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 1, "skipped": 0, "failed": 1, "interrupted": 0}
    assert len((out / "walk" / "frames.jsonl").read_text().splitlines()) == 20
    assert len(list((out / "walk" / "masks").glob("*.png"))) == 20
    again = cli("run", str(clip.path), "--prompt", f"box:{box}", "--out", str(out), "--sink", "jsonl,png")
    assert again.returncode == 0 and "skipped" in again.stderr


def test_config_file_then_environment_then_flags(tmp_path, monkeypatch):
    from pipeline.cli import _config, build_parser

    path = tmp_path / "job.yaml"
    path.write_text("sources: [a.mp4]\nout_dir: out\nkeyframe-every: 5\nsinks: [jsonl, png]\nworkers: 2\n")

    def config(*flags):
        args = build_parser().parse_args(["run", "--config", str(path), *flags])
        return _config(args, sources=args.sources or None)

    first = config()
    assert (first.keyframe_every, first.sinks, first.workers, str(first.out_dir)) == (5, ["jsonl", "png"], 2, "out")
    monkeypatch.setenv("XSAM_PIPELINE_KEYFRAME_EVERY", "7")
    monkeypatch.setenv("XSAM_PIPELINE_SINKS", "[png]")
    assert (config().keyframe_every, config().sinks, config().workers) == (7, ["png"], 2)
    assert config("--keyframe-every", "3").keyframe_every == 3
    monkeypatch.setenv("XSAM_PIPELINE_CONFIG", str(path))  # the file itself may come from the environment
    args = build_parser().parse_args(["run"])
    assert _config(args, sources=None).workers == 2
    env = {**ENV, "XSAM_PIPELINE_KEYFRAMES": "4"}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "a.mp4", "--out", str(tmp_path / "o"),
                             "--prompt", "point:1,1"], capture_output=True, text=True, timeout=120, env=env,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: XSAM_PIPELINE_KEYFRAMES: unknown option 'keyframes' in the environment"


def test_bad_config_file_is_named(tmp_path):
    (tmp_path / "job.yaml").write_text("sources: [a.mp4]\nout_dir: out\nkeyframes: 5\n")
    result = cli("run", "--config", str(tmp_path / "job.yaml"))
    assert result.returncode == 2
    assert "--config: unknown option 'keyframes': Extra inputs are not permitted" in result.stderr
    result = cli("run", str(tmp_path / "a.mp4"), "--prompt", "point:1,1")
    assert result.returncode == 2 and "--out: Field required" in result.stderr


@pytest.mark.slow
def test_killed_job_resubmitted_resumes_from_the_stream_checkpoint(tmp_path):
    import signal
    import time

    clip = make_clip(ClipSpec(seed=8, num_frames=900), tmp_path / "long.mp4")
    box = ",".join(str(int(v)) for v in clip.suggested_prompt(clip.kinds[1], "box").box)
    args = [sys.executable, "-m", "pipeline.cli", "run", str(clip.path), "--prompt", f"box:{box}", "--sink", "jsonl,mp4",
            "--no-split"]  # one stream worker writes frames.jsonl as it goes (a split job's appears when joined)
    env = {**ENV, "XSAM_PIPELINE_CHECKPOINT_EVERY": "50"}
    root = Path(__file__).resolve().parent.parent
    killed = subprocess.Popen([*args, "--out", str(tmp_path / "out")], env=env, cwd=root, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    frames = tmp_path / "out" / "long" / "frames.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (frames.exists() and len(frames.read_text().splitlines()) >= 130):
        time.sleep(0.1)
    os.killpg(killed.pid, signal.SIGKILL)  # the driver, its Ray and every worker, with no chance to clean up
    killed.wait()
    time.sleep(1.0)  # a worker that outlived the kill for a moment could still finish the video
    assert not (tmp_path / "out" / "long" / "done.json").exists(), "killed before the video finished"
    resumed = subprocess.run([*args, "--out", str(tmp_path / "out")], env=env, cwd=root, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((tmp_path / "out" / "summary.json").read_text())["videos"][0]
    assert report["status"] == "done" and report["resumed_from"] in range(100, 900, 50), report
    clean = subprocess.run([*args, "--out", str(tmp_path / "clean")], env=env, cwd=root, capture_output=True,
                           text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    assert frames.read_text() == (tmp_path / "clean" / "long" / "frames.jsonl").read_text()
    assert not (tmp_path / "out" / "long" / "checkpoint.npz").exists()
    # One annotated video of every frame, as the clean run's (parts before the checkpoint kept, joined).
    (count, resumed_video), (clean_count, clean_video) = (
        _every_25th_frame(tmp_path / run / "long" / "annotated.mp4") for run in ("out", "clean"))
    assert count == clean_count == 900
    assert max(np.abs(a - b).mean() for a, b in zip(resumed_video, clean_video)) < 2.0
    assert not (tmp_path / "out" / "long" / "annotated.parts").exists()


def _every_25th_frame(path: Path) -> tuple[int, list[np.ndarray]]:
    """How many frames the video holds, and every 25th of them."""
    count, sampled = 0, []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if count % 25 == 0:
                sampled.append(frame.to_ndarray(format="rgb24").astype(np.int16))
            count += 1
    return count, sampled


def test_ill_posed_every_reaches_the_keyframe_policy_and_zero_turns_it_off():
    from pipeline.cli import _config, build_parser

    def keyframes(*flags):
        args = build_parser().parse_args(["run", "a.mp4", "--out", "out", "--prompt", "point:1,1", *flags])
        return _config(args, sources=args.sources, prompts=args.prompt).keyframe_config()

    assert (keyframes().ill_posed_every, keyframes().ill_posed_flow) == (3, 0.3)
    assert keyframes("--ill-posed-every", "5").ill_posed_every == 5
    assert keyframes("--ill-posed-every", "0").watches_flow is False


def test_live_takes_the_keyframe_options_and_names_a_bad_one(tmp_path):
    from pipeline.cli import build_parser
    from pipeline.live.cli import live_config, live_stream_defaults

    def keyframes(*flags):
        args = build_parser().parse_args(["live", "udp://127.0.0.1:9", "--prompt", "point:1,1", "--out", "o", *flags])
        return live_stream_defaults(live_config(args))["keyframes"]

    assert (keyframes().every, keyframes().ill_posed_every) == (10, 3)
    assert keyframes("--ill-posed-every", "0").watches_flow is False
    assert keyframes("--keyframe-every", "4", "--ill-posed-every", "2").every == 4
    result = cli("live", "udp://127.0.0.1:9", "--prompt", "point:1,1", "--out", str(tmp_path / "out"),
                 "--ill-posed-every", "-1")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --ill-posed-every: Input should be greater than or equal to 0"
    assert not (tmp_path / "out").exists()


def test_live_is_layered_as_run_is(tmp_path, monkeypatch):
    """The same --config file and XSAM_PIPELINE_* variables configure live, its own options included."""
    from pipeline.cli import build_parser
    from pipeline.live.cli import live_config, live_stream_defaults

    path = tmp_path / "live.yaml"
    path.write_text("out_dir: out\nkeyframe-every: 5\nlatency_budget: 0.25\nallow_schemes: [udp]\n")

    def config(*flags):
        return live_config(build_parser().parse_args(["live", "udp://127.0.0.1:9", "--config", str(path), *flags]))

    first = config()
    assert (first.keyframe_every, first.latency_budget, first.allow_schemes, first.sinks) == (5, 0.25, ["udp"], ["jsonl"])
    assert live_stream_defaults(first)["max_pending"] == 8 and str(first.out_dir) == "out"
    monkeypatch.setenv("XSAM_PIPELINE_LATENCY_BUDGET", "0.75")
    monkeypatch.setenv("XSAM_PIPELINE_SINKS", "[jsonl, png]")
    assert (config().latency_budget, config().sinks, config().keyframe_every) == (0.75, ["jsonl", "png"], 5)
    assert config("--latency-budget", "0.1", "--allow-schemes", "rtsp,tcp").allow_schemes == ["rtsp", "tcp"]
    assert config("--latency-budget", "0.1").latency_budget == 0.1
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "live", "udp://127.0.0.1:9", "--prompt",
                             "point:1,1", "--config", str(path)], capture_output=True, text=True, timeout=120,
                            env={**ENV, "XSAM_PIPELINE_QUEUE_SIZE": "0"}, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --queue-size: Input should be greater than or equal to 1"
