"""The page's live part in a real headless Chromium: ``xsam-pipeline ui --live-api`` on ``xsam-pipeline live
--api-port`` (both run as a user runs them), a UDP feed served by ffmpeg. A stream is added by its URL, a box
dragged on its latest frame becomes a prompt whose track the live API reports and the annotated frame shows,
drops and latency are shown as they refresh, the prompt is removed again; a URL the live API refuses shows its
reason on the page, and so does a live service that went away."""

from __future__ import annotations

import json
import re
import time

import pytest

from bench.clips import ClipSpec, make_clip
from bench.feeds import StreamServer
from tests.loopback import still_video
from tests.page import LiveService, UiServer, chromium, drag_box, message, open_page, wait_for

pytestmark = pytest.mark.slow

STREAM = ".live-stream[data-stream-id='cam']"


@pytest.fixture(scope="module")
def blob_clip(tmp_path_factory):
    """Frame 0 of a clip with one red blob, held for a second (the clip's objects sway, and the box drawn must
    fit whatever frame of the loop it lands on); one keyframe a second, so a reader joining the UDP feed
    mid-stream opens quickly. The clip is returned for its ground truth on frame 0."""
    folder = tmp_path_factory.mktemp("live-ui")
    clip = make_clip(ClipSpec(seed=3, num_frames=2, kinds=("red_blob",), instances_per_kind=1), folder / "blob.mp4")
    return clip, still_video(clip.path, folder / "still.mp4", frames=25)


def _colour_change_until(browser, before: list[float], box, done, timeout: float = 30.0) -> float:
    """The largest change of the shown frame's mean R, G or B inside ``box`` since ``before``, polled as the
    frame refreshes until ``done(change)`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        change = max(abs(a - b) for a, b in zip(_mean_rgb(browser, box), before))
        if done(change) or time.monotonic() > deadline:
            return change
        time.sleep(0.2)


def _mean_rgb(browser, box) -> list[float]:
    x0, y0, x1, y1 = (round(v) for v in box)
    return browser.execute_script(
        f"const d = document.querySelector(\"{STREAM} canvas.frame\").getContext('2d')"
        ".getImageData(arguments[0], arguments[1], arguments[2], arguments[3]).data, sum = [0, 0, 0];"
        "for (let i = 0; i < d.length; i += 4) for (let c = 0; c < 3; c++) sum[c] += d[i + c];"
        "return sum.map(s => s / (d.length / 4))", x0, y0, x1 - x0, y1 - y0)


def _figures(browser) -> str:
    return browser.execute_script(f"return document.querySelector(\"{STREAM} .figures\").textContent")


def test_a_box_on_a_live_udp_feed_is_tracked_shown_and_removed(blob_clip, tmp_path):
    clip, still = blob_clip
    box = clip.suggested_prompt("red_blob", "box").box
    feed = StreamServer(still, "udp").start()
    live = LiveService(tmp_path / "live", "--keyframe-every", "5", "--timeout", "5").start()
    (tmp_path / "root").mkdir()
    ui = UiServer(tmp_path / "root", tmp_path / "out", "--live-api", live.url).start()
    try:
        with chromium() as browser:
            open_page(browser, ui)
            browser.find_element("id", "live-url").send_keys("file:///etc/passwd")
            browser.find_element("id", "live-add-button").click()
            refusal = wait_for(browser, "return !document.getElementById('message').hidden"
                                        " && document.getElementById('message').className === 'error'"
                                        " && document.getElementById('message').textContent")
            assert "not a live URL" in refusal or "not allowed" in refusal, refusal
            assert live.get("/streams") == {"streams": []}

            url = browser.find_element("id", "live-url")
            url.clear()
            url.send_keys(feed.url)
            browser.find_element("id", "live-id").send_keys("cam")
            browser.find_element("id", "live-add-button").click()
            wait_for(browser, "const v = window.uiState.liveStreams.cam;"
                              " return v && v.info.status === 'running' && v.frames > 2", timeout=60)
            assert message(browser) == "stream cam added"
            before = _mean_rgb(browser, box)  # the blob as the feed shows it, nothing tracked yet
            figures = _figures(browser)
            frames_in = int(re.search(r"/(\d+) frames", figures).group(1))
            assert re.search(r"drops \d+ \(\d+\.\d %\)", figures), figures
            assert "tracks none" in figures

            drag_box(browser, box, stage=f"{STREAM} .stage")
            wait_for(browser, f"return document.querySelectorAll(\"{STREAM} .live-prompts li\").length === 1")
            spec = browser.find_element("css selector", f"{STREAM} .live-prompts li").text
            corners = [int(v) for v in re.search(r"box:([\d,]+)", spec).group(1).split(",")]
            assert all(abs(v - w) <= 2 for v, w in zip(corners, box)), spec  # the stream's pixels
            deadline = time.monotonic() + 60
            while not (api_report := live.get("/streams/cam"))["track_ids"] and time.monotonic() < deadline:
                time.sleep(0.5)
            assert api_report["track_ids"], json.dumps(api_report)
            report = wait_for(browser, "const v = window.uiState.liveStreams.cam;"
                                       " return v.info.track_ids.length && v.info", timeout=60)
            api_report = live.get("/streams/cam")
            assert report["prompt_ids"] == api_report["prompt_ids"] == [0]
            assert api_report["track_ids"] == report["track_ids"] and api_report["error"] is None
            shown = wait_for(browser, f"return document.querySelector(\"{STREAM} .figures\").textContent"
                                      f".includes('tracks {', '.join(map(str, report['track_ids']))}')"
                                      f" && document.querySelector(\"{STREAM} .figures\").textContent")
            assert re.search(r"latency p50 [\d.]+ ms, p95 [\d.]+ ms", shown), shown
            assert int(re.search(r"/(\d+) frames", shown).group(1)) > frames_in  # the figures refresh
            # the annotated frame the page shows tints the blob in its track's colour
            assert _colour_change_until(browser, before, box, lambda change: change > 20) > 20

            browser.find_element("css selector", f"{STREAM} .live-prompts li button[title='remove prompt 0']").click()
            wait_for(browser, f"return document.querySelectorAll(\"{STREAM} .live-prompts li\").length === 0")
            assert message(browser) == "stream cam: prompt 0 removed"
            assert live.get("/streams/cam")["prompt_ids"] == []
            assert _colour_change_until(browser, before, box, lambda change: change < 8) < 8  # the tint is gone

            live.stop(grace=30)  # the page says so, it does not go blank
            gone = wait_for(browser, "return !document.getElementById('message').hidden"
                                     " && document.getElementById('message').textContent.startsWith('live: ')"
                                     " && document.getElementById('message').textContent")
            assert "the live service does not answer" in gone, gone
    finally:
        ui.stop(grace=30)
        live.stop(grace=30)
        feed.kill()
