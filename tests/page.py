"""The page under test: ``xsam-pipeline ui`` as a user starts it, and a real headless Chromium driving it (Debian's
chromium and chromedriver through selenium; installed with apt-get when missing, as mosquitto is)."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from bench.feeds import LoopbackServer
from tests.loopback import apt_install


class HttpService(LoopbackServer):
    """A command serving HTTP on 127.0.0.1: ready once ``probe`` answers."""

    start_timeout = 60.0
    probe: str  # a path that answers once the service is up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            urllib.request.urlopen(self.url + self.probe, timeout=1).close()
            return True
        except OSError:
            return False


class UiServer(HttpService):
    """``xsam-pipeline ui`` as a user starts it; stopped with SIGTERM, as Ctrl-C would (it shuts its Ray down)."""

    name = "xsam-pipeline ui"
    probe = "/api/config"

    def __init__(self, root: Path, out: Path, *options: str) -> None:
        super().__init__()
        self.root, self.out, self.options = root, out, options

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", "ui", "--root", str(self.root), "--out", str(self.out),
                "--port", str(self.port), *self.options]


class LiveService(HttpService):
    """``xsam-pipeline live --api-port P`` with no sources, as the page's --live-api expects it; stopped with
    SIGTERM (it flushes its streams and writes live_summary.json)."""

    name = "xsam-pipeline live"
    probe = "/streams"

    def __init__(self, out: Path, *options: str) -> None:
        super().__init__()
        self.out, self.options = out, options

    def command(self) -> list[str]:
        return [sys.executable, "-m", "pipeline.cli", "live", "--api-port", str(self.port), "--out", str(self.out),
                *self.options]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=10) as answer:
            return json.load(answer)


def chromium_driver_binary() -> str:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        apt_install("chromium", "chromium-driver")
    return shutil.which("chromedriver")


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium under chromedriver, quit (both processes gone) when the block ends."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(chromium_driver_binary()), options=options)
    try:
        driver.set_script_timeout(30)
        yield driver
    finally:
        driver.quit()


def wait_for(driver, script: str, timeout: float = 30.0):
    """The value of ``script`` (JavaScript returning something) once it is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    message = driver.execute_script("return document.getElementById('message').textContent")
    raise AssertionError(f"timed out waiting for {script!r}; the page says {message!r}")


def open_page(driver, ui: UiServer) -> None:
    driver.get(ui.url)
    wait_for(driver, "return document.body.dataset.ready")


def pick_source(driver, path: str) -> None:
    from selenium.webdriver.support.select import Select

    Select(driver.find_element("id", "source-list")).select_by_value(path)
    wait_for(driver, "return document.querySelector('#prompt-stage canvas.frame').dataset.frame === '0'")


def drag(driver, points: list[tuple[float, float]], tool: str, stage: str = "#prompt-stage") -> None:
    """Press at the first point, move through the others and release, in source pixels turned into the shown
    canvas's; one point is a click."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.find_element("css selector", f"input[name=tool][value={tool}]").click()
    canvas = driver.find_element("css selector", f"{stage} canvas.marks")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)  # as a user scrolls to it
    width, height, shown_width, shown_height = driver.execute_script(
        "const c = arguments[0], r = c.getBoundingClientRect(); return [c.width, c.height, r.width, r.height]", canvas)

    def offset(x: float, y: float) -> tuple[int, int]:  # selenium's offsets are from the element's centre
        return round(x * shown_width / width - shown_width / 2), round(y * shown_height / height - shown_height / 2)

    actions = ActionChains(driver).move_to_element_with_offset(canvas, *offset(*points[0])).click_and_hold()
    for point in points[1:]:
        actions.move_to_element_with_offset(canvas, *offset(*point))
    actions.release().perform()


def drag_box(driver, box: tuple[float, float, float, float], stage: str = "#prompt-stage") -> None:
    x0, y0, x1, y1 = box
    drag(driver, [(x0, y0), ((x0 + x1) / 2, (y0 + y1) / 2), (x1, y1)], "box", stage)


def prompt_specs(driver) -> list[str]:
    return driver.execute_script("return [...document.querySelectorAll('#prompt-list li code')]"
                                 ".map(c => c.textContent.split(/\\s+/)[1])")


def overlay_alpha(driver, stage: str, x: int, y: int) -> int:
    return driver.execute_script(
        f"return document.querySelector('{stage} canvas.overlay').getContext('2d')"
        ".getImageData(arguments[0], arguments[1], 1, 1).data[3]", x, y)


def message(driver) -> str:
    return driver.execute_script("const m = document.getElementById('message'); return m.hidden ? '' : m.textContent")
