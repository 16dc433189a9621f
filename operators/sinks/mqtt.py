"""MQTT sink: one QoS 1 ``PUBLISH`` per frame, the same record as the JSONL file sink.

URL: ``mqtt://[USER[:PASSWORD]@]HOST[:PORT]/TOPIC?qos=1&buffer=N&on_full=drop_oldest|error&flush_timeout=S``

* ``TOPIC``: the URL path without its leading ``/``; ``{stream_id}`` in it is replaced by the
  pipeline's stream id (default ``xsam/{stream_id}``). Port 1883 by default.
* ``qos``: 1 (default, at least once: a message stays buffered until the broker's ``PUBACK``) or 0
  (fire and forget: counted delivered once handed to the socket).
* ``buffer``: records kept locally, sent or not, until the broker acknowledges them (default 10000).
* ``on_full``: what a full buffer does: ``drop_oldest`` (default: the oldest buffered record is
  dropped, counted in ``dropped_buffer_full`` and logged as an error) or ``error`` (raise
  :class:`~operators.errors.OutputError`, stopping the stream).
* ``flush_timeout``: seconds ``close`` keeps trying to deliver what is buffered (default 10).

Each message's payload is compact JSON ``{"key": "<stream_id>:<frame_index>", "record": {...}}`` with
``record`` = ``FrameRecord.to_dict()`` (RLE masks included). Delivery is at least once: when the
connection drops, every record not yet acknowledged is published again, in frame order, on a fresh
connection, so a consumer may see a message twice, always with the same ``key``; de-duplicate on it.

While the broker is down, ``write`` never blocks for long: records go to the local buffer and a
reconnect is tried with exponential backoff (``retry``, 0.2 s doubling up to 5 s) on later
writes; ``close`` keeps trying for ``flush_timeout`` seconds and reports what could not be delivered.
The paho-mqtt network thread of each connection only reads acknowledgements; reconnects are made
here, with a new client each time, so paho never re-sends on its own behind the buffer's back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from urllib.parse import parse_qs, unquote, urlsplit

from operators.backoff import Backoff
from operators.extras import require
from operators.records import FrameRecord
from operators.sinks.base import StreamInfo
from operators.sinks.delivery import BROKER_RETRY, OPTIONS, BrokerSink, DeliveryBuffer

log = logging.getLogger("operators.sinks.mqtt")

DEFAULT_TOPIC = "xsam/{stream_id}"


class _Entry:
    __slots__ = ("key", "payload", "mid")

    def __init__(self, key: str, payload: bytes) -> None:
        self.key, self.payload, self.mid = key, payload, None  # mid: message id once handed to a connection


class MqttSink(BrokerSink):
    """Publishes each record to an MQTT topic; see the module docstring for the URL."""

    needs_image = False

    def __init__(
        self,
        url: str = "mqtt://127.0.0.1:1883/" + DEFAULT_TOPIC,
        *,
        inflight: int = 100,
        retry: Backoff = BROKER_RETRY,
        flush_timeout: float = 10.0,
        socket_timeout: float = 2.0,
        keepalive: int = 10,
    ) -> None:
        self._paho = require("paho.mqtt.client")
        parts = urlsplit(url)
        if parts.scheme != "mqtt":
            raise ValueError(f"mqtt sink URL {url!r} must start with mqtt://")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"qos", *OPTIONS}
        if unknown:
            raise ValueError(f"mqtt sink URL: unknown option(s) {', '.join(sorted(unknown))}")
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.topic_template = unquote(parts.path.lstrip("/")) or DEFAULT_TOPIC
        if parts.fragment or "#" in url or any(c in self.topic_template for c in "#+"):
            raise ValueError(f"mqtt sink URL: topic {self.topic_template!r} may not contain wildcards # or +")
        self.qos = int(query.get("qos", 1))
        if self.qos not in (0, 1):
            raise ValueError(f"mqtt sink URL: qos must be 0 or 1, not {self.qos}")
        self.inflight = max(1, inflight)
        self.delivery = DeliveryBuffer("mqtt", url, query, key_of=lambda entry: entry.key, log=log,
                                       retry=retry, flush_timeout=flush_timeout)
        self.socket_timeout = socket_timeout
        self.keepalive = keepalive
        self.topic = ""
        self.stream_id = ""
        self._buffer: deque[_Entry] = self.delivery.entries
        self._lock = threading.Lock()
        self._acked: set[int] = set()  # mids acknowledged by the current connection (paho thread adds)
        self._client = None
        self._connected = threading.Event()  # CONNACK received on the current client
        self._lost = threading.Event()  # the current client's connection dropped

    # -- Sink protocol ---------------------------------------------------------------------------------
    def open(self, stream: StreamInfo, start_frame: int = 0) -> None:
        """``start_frame`` is accepted for the protocol: messages are appended and keys de-duplicate."""
        self.stream_id = stream.stream_id
        self.topic = self.delivery.where = self.topic_template.replace("{stream_id}", stream.stream_id)

    def write(self, record: FrameRecord) -> None:
        key = f"{record.stream_id}:{record.frame_index}"
        payload = f'{{"key":{json.dumps(key)},"record":{record.to_json()}}}'.encode()  # the record's JSON as encoded once
        self._collect_acks()
        self.delivery.admit(_Entry(key, payload))
        self._pump()

    def close(self) -> dict:
        undelivered = self.delivery.drain(self._send, self.send_pause)
        self._drop_client(disconnect=True)
        return self.delivery.summary(undelivered, topic=self.topic)

    # -- delivery --------------------------------------------------------------------------------------
    send_pause = 0.01  # acknowledgements arrive on paho's thread: a short wait between looks for them

    def _send(self) -> None:
        self._collect_acks()
        if self._buffer:
            self._pump()

    def _collect_acks(self) -> None:
        """Drop acknowledged records from the front of the buffer (acks may come out of order; order is kept)."""
        with self._lock:
            self._collect_acked_locked()
        if self._lost.is_set() and self._client is not None:
            self._fail("connection lost")

    def _pump(self) -> None:
        """Connect if due, then hand unsent records to the connection, oldest first, up to ``inflight`` unacked."""
        if self._client is None:
            if not self.delivery.due or not self._connect():
                return
        sent_unacked = sum(1 for entry in self._buffer if entry.mid is not None)
        for entry in self._buffer:
            if sent_unacked >= self.inflight:
                break
            if entry.mid is not None:
                continue
            info = self._client.publish(self.topic, entry.payload, qos=self.qos)
            if info.rc != self._paho.MQTT_ERR_SUCCESS:
                self._fail(f"publish failed: {self._paho.error_string(info.rc)}")
                return
            entry.mid = info.mid if self.qos else -1
            sent_unacked += 1
        if self.qos == 0:
            with self._lock:
                while self._buffer and self._buffer[0].mid == -1:
                    self._buffer.popleft()
                    self.delivery.delivered(1)

    def _connect(self) -> bool:
        paho = self._paho
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"xsam-{uuid.uuid4().hex[:16]}",
                             clean_session=True)
        client.connect_timeout = self.socket_timeout
        client.max_inflight_messages_set(self.inflight)
        client.max_queued_messages_set(0)
        if self.username is not None:
            client.username_pw_set(self.username, self.password)
        connected, lost, acked, lock = threading.Event(), threading.Event(), set(), self._lock
        refused: list[str] = []

        def on_connect(_c, _u, _flags, reason_code, _props):
            if reason_code.is_failure:
                refused.append(str(reason_code))
                lost.set()
            else:
                connected.set()

        def on_disconnect(_c, _u, _flags, _reason_code, _props):
            lost.set()

        def on_publish(_c, _u, mid, _reason_code, _props):
            with lock:
                acked.add(mid)

        client.on_connect, client.on_disconnect, client.on_publish = on_connect, on_disconnect, on_publish
        try:
            client.connect(self.host, self.port, keepalive=self.keepalive)
            client.loop_start()
        except (OSError, ValueError) as exc:
            self._fail(f"{type(exc).__name__}: {exc}", client)
            return False
        # Wait briefly for CONNACK so records are not handed to a connection that is then refused.
        deadline = time.monotonic() + self.socket_timeout
        while not connected.is_set() and not lost.is_set() and time.monotonic() < deadline:
            connected.wait(0.01)
        if not connected.is_set():
            self._client = client
            self._fail(f"connection refused: {refused[0]}" if refused else "no CONNACK from broker")
            return False
        with self._lock:
            self._client, self._connected, self._lost, self._acked = client, connected, lost, acked
        self.delivery.recovered()
        return True

    def _fail(self, reason: str, client=None) -> None:
        """The connection is gone: forget it, mark its unacked records for re-sending and back off."""
        if client is not None and self._client is None:
            self._client = client
        self._drop_client(disconnect=False)
        resent = 0
        for entry in self._buffer:
            if entry.mid is not None:
                entry.mid = None
                resent += 1
        self.delivery.failed(reason, resent)

    def _drop_client(self, *, disconnect: bool) -> None:
        client, self._client = self._client, None
        with self._lock:
            # Acks already received on this connection still count; later ones cannot arrive.
            self._collect_acked_locked()
            self._acked, self._lost, self._connected = set(), threading.Event(), threading.Event()
        if client is None:
            return
        try:
            if disconnect:
                client.disconnect()
            client.loop_stop()
        except Exception:  # noqa: BLE001 - a dead client may fail to stop cleanly; it is discarded either way
            pass
        try:
            client.socket() and client.socket().close()
        except Exception:  # noqa: BLE001
            pass

    def _collect_acked_locked(self) -> None:
        while self._buffer and self._buffer[0].mid is not None and self._buffer[0].mid in self._acked:
            self._acked.discard(self._buffer.popleft().mid)
            self.delivery.delivered(1)
