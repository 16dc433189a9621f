"""Redis Streams sink: one ``XADD`` entry per frame, the same record as the JSONL file sink.

URL: ``redis://[:password@]HOST:PORT/DB?stream=NAME&maxlen=N&buffer=N&on_full=drop_oldest|error&flush_timeout=S``

* ``stream``: the Redis stream key; ``{stream_id}`` in it is replaced by the pipeline's stream id
  (default ``xsam:{stream_id}``).
* ``maxlen``: cap the Redis stream at about N entries (``XADD MAXLEN ~ N``; Redis trims whole
  macro-nodes, so it keeps at least N). Default: no cap.
* ``buffer``: records kept locally while the broker is unreachable (default 10000).
* ``on_full``: what a full buffer does: ``drop_oldest`` (default: the oldest buffered record is
  dropped, counted in ``dropped_buffer_full`` and logged as an error) or ``error`` (raise
  :class:`~operators.errors.OutputError`, stopping the stream).
* ``flush_timeout``: seconds ``close`` keeps trying to deliver what is buffered (default 10).

Each entry has the fields ``key`` (``"<stream_id>:<frame_index>"``, the idempotent key),
``stream_id``, ``frame_index`` and ``record`` (``FrameRecord.to_dict()`` as compact JSON, RLE masks
included). Delivery is at least once: a batch whose reply was lost is sent again, so a consumer may
see an entry twice, always with the same ``key``; de-duplicate on it. Entries of one stream are
appended in frame order (a re-sent batch repeats frames it already delivered, never reorders new ones).

While Redis is down, ``write`` never blocks for long: records go to the local buffer and a
reconnect is tried with exponential backoff (``retry``, 0.2 s doubling up to 5 s) on later
writes; ``close`` keeps trying for ``flush_timeout`` seconds and reports what could not be delivered.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs, urlsplit, urlunsplit

from operators.backoff import Backoff
from operators.extras import require
from operators.records import FrameRecord
from operators.sinks.base import StreamInfo
from operators.sinks.delivery import BROKER_RETRY, OPTIONS, BrokerSink, DeliveryBuffer

log = logging.getLogger("operators.sinks.redis")

DEFAULT_STREAM = "xsam:{stream_id}"


class RedisStreamSink(BrokerSink):
    """Writes each record to a Redis stream with ``XADD``; see the module docstring for the URL."""

    needs_image = False

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        batch: int = 16,
        retry: Backoff = BROKER_RETRY,
        flush_timeout: float = 10.0,
        socket_timeout: float = 2.0,
    ) -> None:
        redis = require("redis")

        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"redis sink URL {url!r} must start with redis://, rediss:// or unix://")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"stream", "maxlen", *OPTIONS}
        if unknown:
            raise ValueError(f"redis sink URL: unknown option(s) {', '.join(sorted(unknown))}")
        self.url = url
        self.stream_template = query.get("stream", DEFAULT_STREAM)
        self.maxlen = int(query["maxlen"]) if "maxlen" in query else None
        if self.maxlen is not None and self.maxlen < 1:
            raise ValueError("redis sink URL: maxlen must be >= 1")
        self.delivery = DeliveryBuffer("redis", url, query, key_of=lambda entry: entry["key"], log=log,
                                       retry=retry, flush_timeout=flush_timeout)
        self.batch = batch
        self.socket_timeout = socket_timeout
        self._errors = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._client = redis.Redis.from_url(
            urlunsplit(parts._replace(query="")), socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry_on_timeout=False,
        )
        self.stream_key = ""
        self.stream_id = ""

    # -- Sink protocol ---------------------------------------------------------------------------------
    def open(self, stream: StreamInfo, start_frame: int = 0) -> None:
        """``start_frame`` is accepted for the protocol: a stream is append-only and keys de-duplicate."""
        self.stream_id = stream.stream_id
        self.stream_key = self.delivery.where = self.stream_template.replace("{stream_id}", stream.stream_id)

    def write(self, record: FrameRecord) -> None:
        self.delivery.admit({
            "key": f"{record.stream_id}:{record.frame_index}",
            "stream_id": record.stream_id,
            "frame_index": str(record.frame_index),
            "record": record.to_json(),
        })
        if self.delivery.due:
            self._send()

    def close(self) -> dict:
        undelivered = self.delivery.drain(self._send)
        self._client.close()
        return self.delivery.summary(undelivered, stream=self.stream_key)

    # -- delivery --------------------------------------------------------------------------------------
    def _send(self) -> None:
        """Send buffered entries in batches, oldest first; on a connection error keep them and back off."""
        entries = self.delivery.entries
        while entries:
            chunk = [entries[i] for i in range(min(self.batch, len(entries)))]
            try:
                pipe = self._client.pipeline(transaction=False)
                for entry in chunk:
                    if self.maxlen is None:
                        pipe.xadd(self.stream_key, entry)
                    else:
                        pipe.xadd(self.stream_key, entry, maxlen=self.maxlen, approximate=True)
                pipe.execute()
            except self._errors as exc:
                # Part of the batch may have landed: it is sent again (same keys) once Redis is back.
                self.delivery.failed(f"{type(exc).__name__}: {exc}", resent=len(chunk))
                return
            for _ in chunk:
                entries.popleft()
            self.delivery.delivered(len(chunk))
            self.delivery.recovered()
