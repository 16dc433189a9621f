"""MQTT sink against a real mosquitto broker on loopback: record schema and order, outage buffering, full buffer.

mosquitto comes from PATH, else it is installed (see loopback.py) with ``apt-get install -y mosquitto`` (no pip
wheel ships the broker); the client library is paho-mqtt (a project dependency), installed if missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from bench.feeds import free_port
from loopback import (
    Mosquitto, RedisServer, assert_delivered_at_least_once, check_full_buffer, open_sink, read_entries,
    run_job_with_broker_down_across_a_worker_kill, sample_record,
)
from operators.backoff import Backoff
from operators.records import FrameRecord
from operators.sinks import StreamInfo, build_sinks, sink_kind

try:
    import paho.mqtt.client as mqtt
except ImportError:  # a project dependency; install it rather than skip
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "paho-mqtt>=2"], check=True, timeout=600)
    import paho.mqtt.client as mqtt

from operators.sinks.mqtt import MqttSink


@pytest.fixture
def broker(tmp_path):
    server = Mosquitto(tmp_path).start()
    yield server
    server.stop()


class Subscriber:
    """A plain paho-mqtt subscriber, QoS 1, persistent session (survives a broker restart), collecting payloads."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[dict] = []
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}",
                                  clean_session=False)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = lambda c, u, msg: self.messages.append(json.loads(msg.payload))
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber did not subscribe"

    def wait_for(self, keys: set[str], timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not keys <= {m["key"] for m in list(self.messages)} and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_one_message_per_frame_in_order_with_the_jsonl_record(broker, tmp_path):
    from pycocotools import mask as mask_utils

    subscriber = Subscriber(broker.port, "frames/cam")
    url = broker.url + "/frames/{stream_id}?qos=1&buffer=1000"
    assert sink_kind(url) == "mqtt"
    sinks = build_sinks(["jsonl", url], tmp_path / "out")
    assert isinstance(sinks[1], MqttSink)
    for sink in sinks:
        sink.open(StreamInfo("cam", "udp://127.0.0.1:1", 32, 24, 30.0))
    records = [sample_record(i) for i in range(200)]
    for record in records:
        for sink in sinks:
            sink.write(record)
    outputs = [sink.close() for sink in sinks]
    summary = outputs[1]
    assert summary["frames"] == 200 and summary["undelivered"] == 0 and summary["topic"] == "frames/cam"
    subscriber.wait_for({f"cam:{i}" for i in range(200)})
    subscriber.close()

    messages = subscriber.messages
    assert [m["key"] for m in messages] == [f"cam:{i}" for i in range(200)]  # no loss, no duplicate, in order
    lines = [json.loads(line) for line in (tmp_path / "out" / "cam" / "frames.jsonl").read_text().splitlines()]
    assert [m["record"] for m in messages] == lines  # the very same record as the file sink
    for message, record in zip(messages, records):
        data = message["record"]
        decoded = [mask_utils.decode({"size": o["rle"]["size"], "counts": o["rle"]["counts"].encode()})
                   for o in data["objects"]]
        np.testing.assert_array_equal(np.stack(decoded).astype(bool), record.instances.masks)
        assert FrameRecord.from_dict(data).frame_index == record.frame_index


def test_broker_restart_mid_run_delivers_everything_deduplicable_by_key(broker):
    """A checkpoint is allowed only once every record is acknowledged: not during the outage, again after it."""
    subscriber = Subscriber(broker.port, "outage/cam")
    sink = open_sink(MqttSink, broker.url + "/outage/{stream_id}", retry=Backoff(0.05, 0.2),
                     socket_timeout=0.5)
    for i in range(30):
        sink.write(sample_record(i))
    assert sink.checkpoint() and sink.buffered == 0  # every PUBACK came back
    broker.stop()
    time.sleep(0.2)
    started = time.monotonic()
    for i in range(30, 60):
        sink.write(sample_record(i))  # buffered: the broker is down
    assert time.monotonic() - started < 10, "writes must not block for long while the broker is down"
    assert not sink.connected and sink.buffered >= 30 and sink.stats["connection_errors"] >= 1
    started = time.monotonic()
    assert not sink.checkpoint() and sink.buffered >= 30
    assert time.monotonic() - started < 0.5 + 0.2, "a checkpoint during an outage must not wait for the broker"
    broker.start()  # same port, same persisted sessions: the subscriber's subscription survives
    time.sleep(0.3)
    assert sink.checkpoint() and sink.buffered == 0
    for i in range(60, 90):
        sink.write(sample_record(i))
        time.sleep(0.005)
    summary = sink.close()
    assert summary["undelivered"] == 0 and summary["dropped_buffer_full"] == 0 and summary["frames"] == 90
    subscriber.wait_for({f"cam:{i}" for i in range(90)})
    subscriber.close()

    keys = [m["key"] for m in subscriber.messages]
    unique = list(dict.fromkeys(keys))
    assert unique == [f"cam:{i}" for i in range(90)]  # nothing lost, first arrivals in frame order
    for key in set(keys):  # any duplicate carries the same key and the same record
        assert len({json.dumps(m["record"], sort_keys=True) for m in subscriber.messages if m["key"] == key}) == 1


def test_full_buffer_is_reported_never_silent(caplog):
    url = f"mqtt://127.0.0.1:{free_port()}/s?buffer=5"  # nothing listens there
    check_full_buffer(MqttSink, url, "operators.sinks.mqtt", caplog)


def test_build_sinks_and_unreachable_broker_at_close(caplog):
    url = f"mqtt://127.0.0.1:{free_port()}/xsam/{{stream_id}}?qos=1&buffer=1000&flush_timeout=0.5"
    (sink,) = build_sinks([url], None)  # a broker sink takes no output folder
    assert isinstance(sink, MqttSink) and sink.qos == 1 and sink.delivery.size == 1000
    sink.open(StreamInfo("cam", "udp://127.0.0.1:1", 32, 24, 30.0))
    for i in range(3):
        sink.write(sample_record(i))
    started = time.monotonic()
    with caplog.at_level("ERROR", logger="operators.sinks.mqtt"):
        summary = sink.close()
    assert time.monotonic() - started < 3
    assert summary["undelivered"] == 3 and summary["frames"] == 0 and summary["topic"] == "xsam/cam"
    assert "3 records not delivered" in caplog.text and summary["last_error"]


def test_bad_urls_are_named():
    with pytest.raises(ValueError, match="unknown option"):
        MqttSink("mqtt://127.0.0.1/t?qso=1")
    with pytest.raises(ValueError, match="qos"):
        MqttSink("mqtt://127.0.0.1/t?qos=2")
    with pytest.raises(ValueError, match="on_full"):
        MqttSink("mqtt://127.0.0.1/t?on_full=block")
    with pytest.raises(ValueError, match="wildcards"):
        MqttSink("mqtt://127.0.0.1/t/#")
    with pytest.raises(ValueError, match="wildcards"):
        MqttSink("mqtt://127.0.0.1/t/+/x")
    with pytest.raises(ValueError, match="must start with mqtt://"):
        MqttSink("mqtts://127.0.0.1/t")


def test_a_record_is_encoded_once_for_every_sink_that_takes_it(broker, tmp_path, monkeypatch):
    """RLE and JSON are computed once per record, not once per sink: three sinks, one encoding each."""
    import operators.records

    (tmp_path / "redis").mkdir()
    redis_server = RedisServer(tmp_path / "redis").start()
    subscriber = Subscriber(broker.port, "shared/cam")
    encodes, dumps = [], []
    rle_encode, json_dumps = operators.records.rle.encode, json.dumps

    def counted_encode(*args, **kwargs):
        encodes.append(1)
        return rle_encode(*args, **kwargs)

    def counted_dumps(obj, **kwargs):
        if isinstance(obj, dict) and "objects" in obj:  # a frame record's dict
            dumps.append(1)
        return json_dumps(obj, **kwargs)

    monkeypatch.setattr(operators.records.rle, "encode", counted_encode)
    monkeypatch.setattr(json, "dumps", counted_dumps)
    try:
        urls = [redis_server.url + "?stream=shared:{stream_id}", broker.url + "/shared/{stream_id}"]
        sinks = build_sinks(["jsonl", *urls], tmp_path / "out")
        for sink in sinks:
            sink.open(StreamInfo("cam", "udp://127.0.0.1:1", 32, 24, 30.0))
        for i in range(20):
            record = sample_record(i)
            for sink in sinks:
                sink.write(record)
        outputs = [sink.close() for sink in sinks]
        subscriber.wait_for({f"cam:{i}" for i in range(20)})
        entries = read_entries(redis_server.client(), "shared:cam")
    finally:
        subscriber.close()
        redis_server.stop()
    assert len(encodes) == 20 and len(dumps) == 20  # once per record, not 3 times
    assert outputs[1]["undelivered"] == 0 and outputs[2]["undelivered"] == 0
    lines = [json.loads(line) for line in (tmp_path / "out" / "cam" / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == 20
    assert [json.loads(e["record"]) for e in entries] == lines == [m["record"] for m in subscriber.messages]


def test_mosquitto_down_across_a_worker_kill_loses_no_record(ray_local, broker, tmp_path):
    """A checkpoint saved while records waited for their PUBACK let the re-run start after them: they were lost."""
    subscriber = Subscriber(broker.port, "frames/clip")
    jsonl = run_job_with_broker_down_across_a_worker_kill(broker, broker.url + "/frames/{stream_id}", tmp_path)
    subscriber.wait_for({f"clip:{i}" for i in jsonl})
    subscriber.close()
    assert_delivered_at_least_once([(m["key"], m["record"]) for m in subscriber.messages], jsonl)
