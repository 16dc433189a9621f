"""``xsam-pipeline ui`` driven in a real headless Chromium (Debian's chromium and chromedriver, via selenium),
served by the real command on a real clip: draw a box, preview its masks, run the job on Ray, scrub the
result; bad input shows the pipeline's reason on the page, and the API refuses paths out of its folders."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.page import (UiServer, chromium, drag, drag_box, message, open_page, overlay_alpha, pick_source, prompt_specs,
                        wait_for)

pytestmark = pytest.mark.slow

ROCK_BOX = (800, 270, 1160, 430)  # the large rock of bigbuckbunny.mp4's frame 0 (the demo's prompt)
FRAMES = 30  # the clip is cut to this many frames, so the job stays short


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory) -> Path:
    """A root holding the first frames of bigbuckbunny.mp4 (1280x720, real H.264), three of them as a frame
    folder, and a symlink out of it."""
    from pipeline.cli import demo_clip
    from bench.feeds import ffmpeg_binary

    root = tmp_path_factory.mktemp("root")
    (root / "clips").mkdir()
    subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-i", demo_clip(), "-frames:v", str(FRAMES),
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(root / "clips" / "bunny.mp4")],
                   check=True, timeout=120)
    (root / "frames" / "bunny").mkdir(parents=True)  # a frame folder, as DAVIS's JPEGImages/480p/<sequence>/
    subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-i", str(root / "clips" / "bunny.mp4"),
                    "-frames:v", "3", str(root / "frames" / "bunny" / "%05d.jpg")], check=True, timeout=60)
    (root / "outside").symlink_to("/etc")
    return root


@pytest.fixture(scope="module")
def ui(clip_root, tmp_path_factory):
    server = UiServer(clip_root, tmp_path_factory.mktemp("out")).start()
    yield server
    server.stop(grace=30)


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def test_box_preview_run_and_scrub_the_result(ui, browser):
    open_page(browser, ui)
    pick_source(browser, "clips/bunny.mp4")
    drag_box(browser, ROCK_BOX)

    wait_for(browser, "return document.querySelectorAll('#prompt-list li').length === 1")
    kind, _, body = prompt_specs(browser)[0].partition(":")
    corners, _, frame = body.partition("@")
    assert kind == "box" and frame == "0"
    assert all(abs(v - w) <= 3 for v, w in zip(map(int, corners.split(",")), ROCK_BOX)), corners  # source pixels
    drag(browser, [(900, 330), (1000, 350), (1100, 340)], "scribble")  # across the rock
    drag(browser, [(1050, 390)], "point")  # a click on the rock
    wait_for(browser, "return document.querySelectorAll('#prompt-list li').length === 3")
    specs = prompt_specs(browser)
    assert specs[1] == "scribble:prompt-1.png@0"
    x, y = map(int, specs[2].removeprefix("point:").removesuffix("@0").split(","))
    assert abs(x - 1050) <= 3 and abs(y - 390) <= 3, specs[2]
    prompts_file = json.loads(browser.find_element("id", "prompts-json").get_attribute("value"))
    assert prompts_file == {"bunny.mp4": specs}
    assert " ".join(f"--prompt {s}" for s in specs) in browser.find_element("id", "command-text").get_attribute("value")

    browser.find_element("id", "preview-button").click()
    preview = wait_for(browser, "return window.uiState.preview")
    wait_for(browser, "return document.getElementById('preview-info').textContent.includes('instance')")
    rock = preview["objects"][0]
    x, y, w, h = rock["bbox"]
    assert x <= 980 <= x + w and y <= 350 <= y + h  # the mask is where the rock is
    assert overlay_alpha(browser, "#prompt-stage", 980, 350) > 0  # drawn there on the page
    assert overlay_alpha(browser, "#prompt-stage", 640, 20) == 0  # and not over the sky
    assert preview["prompt_ids"] == [0, 1, 2]
    assert {0, 1} <= {o["prompt_id"] for o in preview["objects"]}  # the box's and the scribble's rock

    browser.find_element("css selector", "#prompt-list li[data-prompt-id='2'] button[title^=remove]").click()
    wait_for(browser, "return document.querySelectorAll('#prompt-list li').length === 2")

    name = browser.find_element("id", "job-name")
    name.clear()
    name.send_keys("rock")
    browser.find_element("id", "run-button").click()
    wait_for(browser, "return document.querySelector('#job-progress tr[data-stream-id=bunny]')")
    state = wait_for(browser, "return window.uiState.job.state !== 'running' && window.uiState.job", timeout=240)
    assert state["state"] == "done", state
    assert state["videos"] == [{"stream_id": "bunny", "frames_done": FRAMES, "expected_frames": FRAMES,
                                "status": "done", "error": None, "fps": state["videos"][0]["fps"], "browsable": True}]
    assert {"summary.json", "prompts.json", "bunny/frames.jsonl", "bunny/annotated.mp4"} <= set(state["files"])
    assert (ui.out / "rock" / "bunny" / "frames.jsonl").read_text().count("\n") == FRAMES
    assert json.loads((ui.out / "rock" / "prompts.json").read_text()) == {"*": specs[:2]}  # as run takes it
    with Image.open(ui.out / "rock" / "prompt-1.png") as scribble:  # the scribble, painted at the source's size
        painted = np.asarray(scribble.convert("L")) > 0
    assert painted.shape == (720, 1280) and painted[350, 1000] and not painted[100, 200]

    tracks = wait_for(browser, "return [...document.querySelectorAll('#track-table tbody tr')]"
                               ".map(r => [...r.cells].map(c => c.textContent))")
    assert [str(FRAMES), "0", str(FRAMES - 1)] in [t[2:5] for t in tracks]  # the rock is tracked on every frame

    wait_for(browser, "return window.uiState.result.frame === 0")
    browser.execute_script("const s = document.getElementById('result-slider'); s.value = arguments[0];"
                           "s.dispatchEvent(new Event('input'))", FRAMES - 1)
    record = wait_for(browser, f"return window.uiState.result.frame === {FRAMES - 1} && window.uiState.result.record")
    assert overlay_alpha(browser, "#result-stage", 980, 350) > 0  # the rock's mask
    assert overlay_alpha(browser, "#result-stage", 640, 20) == 0
    shown = browser.find_element("id", "result-frame-info").text
    assert shown.endswith("tracks " + ", ".join(str(o["track_id"]) for o in record["objects"])), shown

    link = browser.find_element("css selector", "#downloads a[href$='bunny/frames.jsonl']").get_attribute("href")
    with urllib.request.urlopen(link) as answer:
        assert answer.read().decode() == (ui.out / "rock" / "bunny" / "frames.jsonl").read_text()
    assert message(browser) == ""


def test_bad_input_shows_the_reason(ui, browser):
    open_page(browser, ui)
    listed = browser.execute_script("return [...document.querySelectorAll('#source-list option')].map(o => o.value)")
    assert listed == ["", "clips/bunny.mp4", "frames/bunny"]  # not the symlink out of the root
    pick_source(browser, "frames/bunny")
    assert "3 frames" in browser.find_element("id", "source-info").text
    pick_source(browser, "clips/bunny.mp4")
    browser.find_element("id", "preview-button").click()
    assert "place a prompt first" in wait_for(browser, "return !document.getElementById('message').hidden"
                                                       " && document.getElementById('message').textContent")

    browser.execute_script("const n = document.getElementById('frame-number'); n.max = 1000; n.value = 500;"
                           "window.uiState.source.lastFrame = 1000; n.dispatchEvent(new Event('change'))")
    assert "frame 500: past the end of the video (it has 30 frames)" in wait_for(
        browser, "return document.getElementById('message').textContent.includes('past the end')"
                 " && document.getElementById('message').textContent")

    for path in ("outside/passwd", "../../etc/passwd", "/etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{ui.url}/api/frame?path={urllib.request.quote(path)}&index=0")
        assert refused.value.code == 400
        assert json.loads(refused.value.read())["error"] == "PathOutsideError"


def test_a_job_run_from_the_command_line_is_browsed_on_the_page(ui, browser):
    """Folders under --out holding a summary.json are jobs the page opens, read back and checked: a video whose
    source is outside the root is listed but not opened; a summary that is not one is refused with the reason."""
    out = ui.out / "cli-job"
    subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(ui.root / "clips" / "bunny.mp4"), "--prompt",
                    "box:800,270,1160,430", "--out", str(out), "--sink", "jsonl", "--no-progress"], check=True,
                   timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    moved = ui.out / "moved-job"  # the same job, its source said to be outside the root
    shutil.copytree(out, moved)
    summary["videos"][0]["source"] = "/etc/passwd"
    (moved / "summary.json").write_text(json.dumps(summary))
    (ui.out / "not-a-job").mkdir()
    (ui.out / "not-a-job" / "summary.json").write_text('{"videos": "none"}')

    open_page(browser, ui)
    jobs = browser.execute_script("return [...document.querySelectorAll('#job-list option')].map(o => o.value)")
    assert {"cli-job", "moved-job", "not-a-job"} <= set(jobs)
    from selenium.webdriver.support.select import Select

    Select(browser.find_element("id", "job-list")).select_by_value("cli-job")
    wait_for(browser, "return window.uiState.result && window.uiState.result.frame === 0")
    tracks = wait_for(browser, "return [...document.querySelectorAll('#track-table tbody tr')]"
                               ".map(r => [...r.cells].map(c => c.textContent))")
    assert [str(FRAMES), "0", str(FRAMES - 1)] in [t[2:5] for t in tracks]
    assert overlay_alpha(browser, "#result-stage", 980, 350) > 0

    Select(browser.find_element("id", "job-list")).select_by_value("moved-job")
    row = wait_for(browser, "return window.uiState.job.name === 'moved-job' && window.uiState.job.videos[0]")
    assert row["status"] == "done" and not row["browsable"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{ui.url}/api/jobs/moved-job/videos/bunny/frame?index=0")
    assert refused.value.code == 400 and "no such video" in json.loads(refused.value.read())["message"]

    Select(browser.find_element("id", "job-list")).select_by_value("not-a-job")
    assert "not a job summary (no list of videos)" in wait_for(
        browser, "return !document.getElementById('message').hidden && document.getElementById('message').textContent")



def test_the_command_refuses_bad_arguments_in_one_line(tmp_path):
    """A missing root, a live API that is not http and a port in use: ``error:`` naming it, exit 2, nothing served."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        cases = {("--root", str(tmp_path / "none")): "--root: not a folder",
                 ("--live-api", "ftp://127.0.0.1:1"): "--live-api: give the live service's http:// URL",
                 ("--port", str(busy)): f"error: --port: cannot listen on 127.0.0.1:{busy}"}
        for options, reason in cases.items():
            run = subprocess.run([sys.executable, "-m", "pipeline.cli", "ui", "--root", str(tmp_path), "--out",
                                  str(tmp_path / "out"), *options], capture_output=True, text=True, timeout=60)
            assert run.returncode == 2 and run.stderr.startswith("error: ") and reason in run.stderr, run.stderr
            assert run.stderr.count("\n") == 1 and run.stdout == "", (run.stdout, run.stderr)
