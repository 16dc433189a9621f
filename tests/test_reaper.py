"""A local Ray cluster goes away with the driver that started it, even one killed with SIGKILL (issue 14, item 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from bench.clips import ClipSpec, make_clip

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT)}


def _still_running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {process.name()}")
        except psutil.NoSuchProcess:
            pass
    return alive


def _wait_gone(processes: list[psutil.Process], seconds: float) -> list[str]:
    deadline = time.time() + seconds
    while (alive := _still_running(processes)) and time.time() < deadline:
        time.sleep(0.2)
    return alive


def _driver_with_child() -> tuple[subprocess.Popen, psutil.Process]:
    """A "driver" whose child re-parents to init when the driver dies, as Ray's agents do."""
    driver = subprocess.Popen([sys.executable, "-c", "import subprocess, time; "
                               "subprocess.Popen(['sleep', '120']); time.sleep(120)"])
    deadline = time.time() + 10
    while not (children := psutil.Process(driver.pid).children()) and time.time() < deadline:
        time.sleep(0.05)
    return driver, children[0]


def test_without_a_reaper_the_child_outlives_its_killed_driver():
    driver, orphan = _driver_with_child()
    driver.kill()
    driver.wait()
    time.sleep(1.0)
    try:
        assert _still_running([orphan]), "the child outlives its killed parent, as the agents do"
    finally:
        orphan.kill()


def test_the_reaper_kills_what_a_killed_driver_leaves_behind():
    driver, orphan = _driver_with_child()
    reaper = subprocess.Popen([sys.executable, "-m", "pipeline.reaper", str(driver.pid)], stdin=subprocess.PIPE,
                              cwd=ROOT, env=ENV, start_new_session=True)
    time.sleep(1.0)  # the reaper has looked at least once
    driver.kill()
    driver.wait()
    reaper.stdin.close()  # the pipe's write end, which only the driver holds in real use, is closed by its death
    assert reaper.wait(timeout=10) == 0
    assert _wait_gone([orphan], 5) == []


@pytest.mark.slow
def test_a_driver_killed_with_sigkill_leaves_no_ray_process(tmp_path):
    clip = make_clip(ClipSpec(seed=3, num_frames=900), tmp_path / "long.mp4")
    out = tmp_path / "out"
    with tempfile.TemporaryDirectory(prefix="rk", dir="/tmp") as ray_tmp:  # Ray's socket paths must stay short
        driver = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "run", str(clip.path), "--prompt", "point:10,10", "--out", str(out),
             "--sink", "jsonl", "--no-split"], env={**ENV, "RAY_TMPDIR": ray_tmp}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        frames = out / "long" / "frames.jsonl"
        deadline = time.time() + 120
        while time.time() < deadline and not (frames.exists() and len(frames.read_text().splitlines()) >= 50):
            time.sleep(0.1)
        assert frames.exists(), "the job started"
        cluster = psutil.Process(driver.pid).children(recursive=True)
        names = {p.name() for p in cluster if p.is_running()}
        assert {"raylet", "gcs_server"} <= names, names
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: its processes get no signal
        driver.wait()
        assert _wait_gone(cluster, 20) == []
