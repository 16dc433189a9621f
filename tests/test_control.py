"""The live service's control plane with real components: ffmpeg feeds on loopback, a real Redis control stream,
the HTTP API through a real HTTP client (httpx) against ``xsam-pipeline live --api-port`` run as a subprocess."""

from __future__ import annotations

import base64
import http.server
import socket
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from bench.clips import ClipSpec, make_clip
from bench.feeds import StreamServer, free_port
from loopback import RedisServer
from operators.keyframes import KeyframeConfig
from pipeline.control.commands import CommandError, CommandHandler, SourcePolicy, check_stream_id
from pipeline.control.redis import RedisControl
from pipeline.live import LiveRunner, LiveStreamSpec
from pipeline.sources import ReconnectPolicy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory):
    """Objects that stay put, so a box drawn on frame 0 fits whatever frame of the loop it lands on; a keyframe a
    second, so a reader joining the UDP feed mid-stream opens quickly."""
    spec = ClipSpec(seed=6, num_frames=50, fps=25.0, kinds=("red_blob",), instances_per_kind=2, speed=0.0, gop=25)
    return make_clip(spec, tmp_path_factory.mktemp("control") / "still.mp4")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _png(width: int, height: int) -> bytes:
    image = np.zeros((height, width), np.uint8)
    image[height // 4: height // 2, width // 4: width // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class RecordingHTTPServer:
    """An HTTP server on loopback that records every request it receives (and answers 404)."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the http.server API
                recorder.requests.append(self.path)
                self.send_error(404)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/live.ts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_stream_ids_are_folder_names_and_sources_follow_the_policy(tmp_path):
    for bad in ("../x", "a/b", ".hidden", "", "x" * 65, "-rf"):
        with pytest.raises(CommandError):
            check_stream_id(bad)
    assert check_stream_id("cam_1.front-door") == "cam_1.front-door"
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not opened")
    policy = SourcePolicy()
    for refused, status in ((str(video), 403), ("http://127.0.0.1:1/x", 403), ("file:///etc/passwd", 400),
                            ("concat:/etc/passwd", 400), ("/dev/video0", 403), ("", 400)):
        with pytest.raises(CommandError) as error:
            policy.check(refused)
        assert error.value.status == status, refused
    policy.check("rtsp://cam/1")
    policy.check("udp://127.0.0.1:5000")
    SourcePolicy(allow_files=True).check(str(video))
    SourcePolicy(("udp", "http")).check("http://cam/live.ts")
    with pytest.raises(ValueError, match="unknown source scheme gopher"):
        SourcePolicy(("gopher",))


def test_control_stream_refuses_prompts_that_do_not_fit_and_sources_not_allowed_while_the_stream_runs_on(
        still_clip, tmp_path):
    """Issue 14 items 4 and 9: a wrong-size scribble was answered ok and then killed the feed; NaN/inf boxes
    were answered ok; a control message could open any local file or make the runner fetch any URL."""
    feed = StreamServer(still_clip.path, "udp").start()
    redis_server = RedisServer(tmp_path).start()
    recorder = RecordingHTTPServer()
    client = redis_server.client()
    control = None
    small = tmp_path / "small.png"
    small.write_bytes(_png(50, 50))
    try:
        runner = LiveRunner(["jsonl"], tmp_path / "out")
        spec = dict(timeout=5.0, reconnect=ReconnectPolicy(initial=0.2, max_delay=1.0),
                    keyframes=KeyframeConfig(every=5), options={"analyzeduration": "500000"})
        handler = CommandHandler(runner, lambda stream_id, url, prompts: LiveStreamSpec(stream_id, url, prompts, **spec))
        control = RedisControl(handler, redis_server.url + "?stream=ctl").start()
        stream = runner.add_stream(LiveStreamSpec("cam", feed.url, [], **spec))
        _wait(lambda: stream.frame_size == (320, 240), 20, "the feed to connect")

        def send(command: dict) -> dict:
            entry = client.xadd("ctl", {"command": json.dumps(command)})
            return _wait(lambda: next((json.loads(f["reply"]) for _, f in client.xrange("ctl:replies")
                                       if json.loads(f["reply"])["id"] == entry), None), 10, f"the reply to {command}")

        def add(prompt) -> dict:
            return send({"op": "add_prompts", "stream_id": "cam", "prompts": [prompt]})

        refusals = {
            "scribble:" + str(small): "read only with --allow-files",  # a local file: not read from a control message
            json.dumps({"type": "scribble", "png": base64.b64encode(_png(50, 50)).decode()}): "is 50x50, the stream",
            "box:nan,nan,nan,nan": "finite", "box:0,0,inf,inf": "finite", "point:1e999,10": "finite",
            "box:400,300,500,400": "outside the 320x240 frame", "point:320,10": "outside",
        }
        for prompt, reason in refusals.items():
            reply = add(json.loads(prompt) if prompt.startswith("{") else prompt)
            assert not reply["ok"] and reason in reply["error"], reply
        trusting = CommandHandler(runner, handler.make_spec, SourcePolicy(allow_files=True))
        with pytest.raises(CommandError, match="mask is 50x50, the frame is 320x240"):  # the issue's own case
            trusting.add_prompts("cam", ["scribble:" + str(small)])
        assert not send({"op": "add_prompts", "stream_id": "cam", "prompts": ["point:5,5"], "prompt_ids": [-1]})["ok"]
        assert not send({"op": "add_stream", "source": feed.url, "stream_id": "../escape"})["ok"]
        assert not send({"op": "add_stream", "source": feed.url, "options": {"options": {"a": "b"}}})["ok"]

        for source in (str(still_clip.path), recorder.url, "file://" + str(still_clip.path)):
            reply = send({"op": "add_stream", "stream_id": "sneaky", "source": source})
            assert not reply["ok"] and ("not allowed" in reply["error"] or "not a live URL" in reply["error"]), reply
        assert recorder.requests == [] and set(runner.streams) == {"cam"}

        box = ",".join(map(str, still_clip.suggested_prompt("red_blob", "box").box))
        added = add(f"box:{box}")
        assert added["ok"] and added["result"] == {"added": [0]}, added
        taken = send({"op": "add_prompts", "stream_id": "cam", "prompts": ["point:5,5"], "prompt_ids": [0]})
        assert not taken["ok"] and "taken" in taken["error"]
        at = stream.records_written
        _wait(lambda: stream.records_written >= at + 25, 20, "records after the refusals")
        report = runner.stream_report("cam")
        assert report["status"] == "running" and report["error"] is None and report["prompt_ids"][:1] == [0]
    finally:
        if control is not None:
            control.stop()
        runner.stop()
        runner.wait()
        recorder.close()
        redis_server.kill()
        feed.kill()



def _start_service(out: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``xsam-pipeline live --api-port P`` with no sources; its log goes to ``log`` (a pipe nobody reads fills)."""
    port = free_port()
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "live", "--api-port", str(port), "--out", str(out),
             "--keyframe-every", "5", "--timeout", "5"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the service exited: {log.read_text()}")
        try:
            return httpx.get(base + "/streams", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    _wait(up, 60, "the HTTP API")
    return process, base


def test_http_api_adds_prompts_and_streams_refuses_bad_ones_and_serves_the_annotated_frame(still_clip, tmp_path):
    feed, other_feed = StreamServer(still_clip.path, "udp").start(), StreamServer(still_clip.path, "udp").start()
    out = tmp_path / "out"
    log = tmp_path / "live.log"
    process, base = _start_service(out, log)
    try:
        api = httpx.Client(base_url=base, timeout=40)
        assert api.get("/streams").json() == {"streams": []}  # the empty service
        created = api.post("/streams", json={"source": feed.url, "id": "cam"})
        assert created.status_code == 201 and created.json() == {"stream_id": "cam", "prompt_ids": []}
        assert api.post("/streams", json={"source": feed.url, "id": "cam"}).status_code == 409
        report = _wait(lambda: (r := api.get("/streams/cam").json())["status"] == "running" and r, 30, "the stream")
        assert report["frame_size"] == [320, 240] and report["prompt_ids"] == []

        box = list(still_clip.suggested_prompt("red_blob", "box").box)
        refused = {
            "/streams/cam/prompts": [({"prompts": [{"type": "box", "box": [400, 300, 500, 400]}]}, 400, "outside"),
                                     ({"prompts": [{"type": "scribble", "png": base64.b64encode(_png(50, 50)).decode()}]},
                                      400, "50x50"),
                                     ({"prompts": ["box:nan,0,5,5"]}, 400, "finite"),
                                     ({"prompts": [5]}, 422, "prompts.0"),
                                     ({"prompts": []}, 422, "prompts"),
                                     ({"prompts": ["point:5,5"], "extra": 1}, 422, "extra")],
            "/streams/nope/prompts": [({"prompts": ["point:5,5"]}, 404, "no stream 'nope'")],
            "/streams": [({"source": "/etc/passwd"}, 403, "--allow-files"), ({"source": feed.url, "id": "../x"}, 400, "stream id")],
        }
        with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as raw:  # httpx won't lie
            raw.sendall(b"POST /streams/cam/prompts HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n{}")
            assert raw.recv(200).startswith(b"HTTP/1.1 413")
        for path, cases in refused.items():
            for body, status, reason in cases:
                answer = api.post(path, json=body)
                assert answer.status_code == status and reason in answer.json()["detail"], (body, answer.text)

        added = api.post("/streams/cam/prompts", json={"prompts": [{"type": "box", "box": box}]})
        assert added.status_code == 201 and added.json() == {"added": [0]}
        assert api.post("/streams/cam/prompts", json={"prompts": ["point:5,5"], "prompt_ids": [0]}).status_code == 409
        tracked = _wait(lambda: (r := api.get("/streams/cam").json())["track_ids"] and r, 30, "tracks")
        assert tracked["status"] == "running" and tracked["prompt_ids"] == [0] and tracked["error"] is None
        frame = api.get("/streams/cam/frame.jpg")
        assert frame.headers["content-type"] == "image/jpeg"
        assert cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)

        # Prompts given with a stream are checked against its frame once it connects: one that does not fit is
        # reported, the stream runs with the others.
        created = api.post("/streams", json={"source": other_feed.url, "prompts": ["box:400,300,500,400", "point:5,5"]})
        assert created.status_code == 201 and created.json()["prompt_ids"] == [0, 1]
        other = "/streams/" + created.json()["stream_id"]
        report = _wait(lambda: (r := api.get(other).json())["status"] == "running" and r, 30, "the second stream")
        [rejected] = [e for e in report["events"] if e["event"] == "prompt_rejected"]
        assert rejected["prompt_id"] == 0 and "outside the 320x240 frame" in rejected["reason"]
        assert report["prompt_ids"] == [1] and report["prompt_ids_used"] == [0, 1] and report["error"] is None
        assert api.delete(other).json()["status"] == "stopped"

        assert api.delete("/streams/cam/prompts/0").json() == {"removed": [0]}
        assert api.delete("/streams/cam/prompts/0").status_code == 404
        final = api.delete("/streams/cam")
        assert final.status_code == 200 and final.json()["status"] == "stopped"
        lines = (out / "cam" / "frames.jsonl").read_text().splitlines()
        assert final.json()["records_written"] == len(lines) > 0  # flushed before the reply
        assert [s["status"] for s in api.get("/streams").json()["streams"]] == ["stopped", "stopped"]
        again = api.post("/streams", json={"source": feed.url, "id": "cam"})
        assert again.status_code == 409 and "another id" in again.json()["detail"]
        assert api.get("/streams/cam/frame.jpg").status_code == 200 and api.get("/streams/x/frame.jpg").status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        feed.kill()
        other_feed.kill()
    assert process.returncode == 0, log.read_text()
    summary = json.loads((out / "live_summary.json").read_text())
    assert [s["stream_id"] for s in summary["streams"]] == ["cam", created.json()["stream_id"]]


def test_live_without_sources_needs_a_control_plane(tmp_path):
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "live", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith("error: give live sources")
    busy = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", busy))
        holder.listen()
        run = subprocess.run([sys.executable, "-m", "pipeline.cli", "live", "--out", str(tmp_path), "--api-port",
                              str(busy)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 2 and "error: --api-port: cannot listen on 127.0.0.1" in run.stderr
