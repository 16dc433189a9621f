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
reconnect is tried with exponential backoff (``retry_initial`` to ``retry_max`` seconds) on later
writes; ``close`` keeps trying for ``flush_timeout`` seconds and reports what could not be delivered.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from operators.errors import OutputError
from operators.records import FrameRecord
from operators.sinks.base import StreamInfo

log = logging.getLogger("operators.sinks.redis")

DEFAULT_STREAM = "xsam:{stream_id}"


class RedisStreamSink:
    """Writes each record to a Redis stream with ``XADD``; see the module docstring for the URL."""

    needs_image = False

    def __init__(
        self,
        out_dir: str | Path | None = None,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        batch: int = 16,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        flush_timeout: float = 10.0,
        socket_timeout: float = 2.0,
    ) -> None:
        import redis  # imported here: only this sink needs redis-py

        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"redis sink URL {url!r} must start with redis://, rediss:// or unix://")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(query) - {"stream", "maxlen", "buffer", "on_full", "flush_timeout"}
        if unknown:
            raise ValueError(f"redis sink URL: unknown option(s) {', '.join(sorted(unknown))}")
        self.url = url
        self.stream_template = query.get("stream", DEFAULT_STREAM)
        self.maxlen = int(query["maxlen"]) if "maxlen" in query else None
        self.buffer_size = int(query.get("buffer", 10_000))
        self.on_full = query.get("on_full", "drop_oldest")
        if self.on_full not in ("drop_oldest", "error"):
            raise ValueError(f"redis sink URL: on_full must be drop_oldest or error, not {self.on_full!r}")
        if self.buffer_size < 1 or (self.maxlen is not None and self.maxlen < 1):
            raise ValueError("redis sink URL: buffer and maxlen must be >= 1")
        self.batch = batch
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.flush_timeout = float(query.get("flush_timeout", flush_timeout))
        self._errors = (redis.ConnectionError, redis.TimeoutError, OSError)
        self._client = redis.Redis.from_url(
            urlunsplit(parts._replace(query="")), socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry_on_timeout=False,
        )
        self.stream_key = ""
        self.stream_id = ""
        self._buffer: deque[dict[str, str]] = deque()
        self._retry_at = 0.0
        self._failures = 0
        self.connected = True
        self.stats = {"written": 0, "delivered": 0, "retried_entries": 0, "dropped_buffer_full": 0, "connection_errors": 0,
                      "max_buffered": 0}
        self.last_error: str | None = None

    # -- Sink protocol ---------------------------------------------------------------------------------
    def open(self, stream: StreamInfo, start_frame: int = 0) -> None:
        """``start_frame`` is accepted for the protocol: a stream is append-only and keys de-duplicate."""
        self.stream_id = stream.stream_id
        self.stream_key = self.stream_template.replace("{stream_id}", stream.stream_id)

    def write(self, record: FrameRecord) -> None:
        entry = {
            "key": f"{record.stream_id}:{record.frame_index}",
            "stream_id": record.stream_id,
            "frame_index": str(record.frame_index),
            "record": json.dumps(record.to_dict(), separators=(",", ":")),
        }
        if len(self._buffer) >= self.buffer_size:
            if self.on_full == "error":
                raise OutputError(self.url, f"redis unreachable ({self.last_error}) and the local buffer of "
                                            f"{self.buffer_size} records is full")
            lost = self._buffer.popleft()
            self.stats["dropped_buffer_full"] += 1
            log.error("redis sink %s: buffer full (%d records, broker down: %s); dropped record %s",
                      self.stream_key, self.buffer_size, self.last_error, lost["key"])
        self._buffer.append(entry)
        self.stats["written"] += 1
        self.stats["max_buffered"] = max(self.stats["max_buffered"], len(self._buffer))
        if len(self._buffer) >= 1 and time.monotonic() >= self._retry_at:
            self._send()

    def close(self) -> dict:
        deadline = time.monotonic() + self.flush_timeout
        while self._buffer and time.monotonic() < deadline:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                continue
            self._send()
        undelivered = len(self._buffer)
        if undelivered:
            log.error("redis sink %s: %d records not delivered (broker unreachable: %s)", self.stream_key,
                      undelivered, self.last_error)
        self._client.close()
        return {"sink": "redis", "url": self.url, "stream": self.stream_key, "frames": self.stats["delivered"],
                "undelivered": undelivered, **self.stats, "last_error": self.last_error}

    # -- delivery --------------------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def _send(self) -> None:
        """Send buffered entries in batches, oldest first; on a connection error keep them and back off."""
        while self._buffer:
            chunk = [self._buffer[i] for i in range(min(self.batch, len(self._buffer)))]
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
                self._failures += 1
                self.stats["connection_errors"] += 1
                self.stats["retried_entries"] += len(chunk)
                self.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(self.retry_max, self.retry_initial * 2 ** (self._failures - 1))
                self._retry_at = time.monotonic() + delay
                if self.connected:
                    log.warning("redis sink %s: broker unreachable (%s); buffering, retry in %.1f s",
                                self.stream_key, self.last_error, delay)
                self.connected = False
                return
            for _ in chunk:
                self._buffer.popleft()
            self.stats["delivered"] += len(chunk)
            if not self.connected:
                log.warning("redis sink %s: broker back after %d failed attempts", self.stream_key, self._failures)
            self.connected, self._failures, self._retry_at = True, 0, 0.0
