"""What every message-queue sink shares: a bounded buffer of records awaiting the broker, and backoff.

The broker-specific part (how a batch is sent and acknowledged) stays in each sink; the buffer
decides what a full buffer does, when the next connection attempt is due, and counts every record,
so all brokers behave and report alike. A stream checkpoint is saved only while the buffer is empty
(:meth:`BrokerSink.checkpoint`), so records only ever held here are never behind a checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Callable, Mapping

from operators.backoff import Backoff
from operators.errors import OutputError, SinkWriteError

#: URL query options every broker sink understands.
OPTIONS = ("buffer", "on_full", "flush_timeout")
#: How the broker sinks space their attempts to reach a broker that is down.
BROKER_RETRY = Backoff(initial=0.2, max_delay=5.0)


class DeliveryBuffer:
    """Records not yet acknowledged by a broker, oldest first.

    ``buffer`` (default 10000) bounds it; a full buffer drops the oldest record, counted and logged
    as an error (``on_full=drop_oldest``), or raises :class:`OutputError` (``on_full=error``).
    After a failure the next attempt is due after the ``retry`` backoff; ``drain`` keeps trying for
    ``flush_timeout`` seconds.
    """

    def __init__(
        self,
        kind: str,
        url: str,
        query: Mapping[str, str],
        *,
        key_of: Callable[[Any], str],
        log: logging.Logger,
        retry: Backoff,
        flush_timeout: float,
    ) -> None:
        self.kind, self.url, self.key_of, self.log = kind, url, key_of, log
        self.size = int(query.get("buffer", 10_000))
        if self.size < 1:
            raise ValueError(f"{kind} sink URL: buffer must be >= 1")
        self.on_full = query.get("on_full", "drop_oldest")
        if self.on_full not in ("drop_oldest", "error"):
            raise ValueError(f"{kind} sink URL: on_full must be drop_oldest or error, not {self.on_full!r}")
        self.flush_timeout = float(query.get("flush_timeout", flush_timeout))
        self.retry = retry
        self.entries: deque = deque()
        self.where = ""  # the stream key or topic, for log lines; set when the sink opens
        self.connected = True  # for logging transitions only
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: str | None = None
        self.stats = {"written": 0, "delivered": 0, "retried_entries": 0, "dropped_buffer_full": 0,
                      "connection_errors": 0, "max_buffered": 0}

    def __len__(self) -> int:
        return len(self.entries)

    def admit(self, entry: Any) -> None:
        """Append ``entry``, applying the full-buffer policy first."""
        if len(self.entries) >= self.size:
            if self.on_full == "error":
                raise OutputError(self.url, f"{self.kind} broker unreachable ({self.last_error}) and the local buffer "
                                            f"of {self.size} records is full")
            lost = self.entries.popleft()
            self.stats["dropped_buffer_full"] += 1
            self.log.error("%s sink %s: buffer full (%d records, broker down: %s); dropped record %s",
                           self.kind, self.where, self.size, self.last_error, self.key_of(lost))
        self.entries.append(entry)
        self.stats["written"] += 1
        self.stats["max_buffered"] = max(self.stats["max_buffered"], len(self.entries))

    @property
    def due(self) -> bool:
        """Whether a (re)connection or send may be tried now."""
        return time.monotonic() >= self.retry_at

    def failed(self, reason: str, resent: int) -> None:
        """The broker failed; ``resent`` records will go again. Back off exponentially."""
        self.failures += 1
        self.stats["connection_errors"] += 1
        self.stats["retried_entries"] += resent
        self.last_error = reason
        delay = self.retry.delay(self.failures)
        self.retry_at = time.monotonic() + delay
        if self.connected:
            self.log.warning("%s sink %s: broker unreachable (%s); buffering, retry in %.1f s",
                             self.kind, self.where, reason, delay)
        self.connected = False

    def recovered(self) -> None:
        if not self.connected:
            self.log.warning("%s sink %s: broker back after %d failed attempts", self.kind, self.where, self.failures)
        self.connected, self.failures, self.retry_at = True, 0, 0.0

    def delivered(self, count: int) -> None:
        """``count`` records left the front of the buffer acknowledged."""
        self.stats["delivered"] += count

    def drain(self, step: Callable[[], None], pause: float = 0.0) -> int:
        """Call ``step`` until the buffer is empty or ``flush_timeout`` passes; return and log what is left."""
        self._empty(step, self.flush_timeout, pause, wait_for_retry=True)
        undelivered = len(self.entries)
        if undelivered:
            self.log.error("%s sink %s: %d records not delivered (broker unreachable: %s)", self.kind, self.where,
                           undelivered, self.last_error)
        return undelivered

    def settle(self, step: Callable[[], None], timeout: float, pause: float = 0.0) -> bool:
        """Whether the broker acknowledged every record, calling ``step`` for up to ``timeout`` seconds while it
        answers; at once False while it is unreachable (a checkpoint is then not saved, never waited for)."""
        self._empty(step, timeout, pause, wait_for_retry=False)
        return not self.entries

    def _empty(self, step: Callable[[], None], timeout: float, pause: float, *, wait_for_retry: bool) -> None:
        deadline = time.monotonic() + timeout
        while self.entries and time.monotonic() < deadline:
            wait = self.retry_at - time.monotonic()
            if wait > 0:
                if not wait_for_retry:
                    return
                time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
                continue
            step()
            if pause:
                time.sleep(pause)

    def summary(self, undelivered: int, **extra: Any) -> dict:
        return {"sink": self.kind, "url": self.url, **extra, "frames": self.stats["delivered"],
                "undelivered": undelivered, **self.stats, "last_error": self.last_error}


def undelivered_error(source: str, outputs: list[dict]) -> dict | None:
    """The error of a stream whose broker sinks kept records back (``outputs``: every sink's close() summary);
    None when every record was delivered."""
    lost = "; ".join(f"{o['sink']} sink {o.get('url', '')}: {o['undelivered']} records not delivered "
                     f"({o.get('last_error') or 'broker unreachable'})" for o in outputs if o.get("undelivered"))
    return SinkWriteError(source, lost).to_dict() if lost else None


class BrokerSink:
    """Base of the message-queue sinks: what a caller may ask of any of them, read from ``self.delivery``.

    A sink gives ``_send`` (try to deliver what is buffered, or reconnect when due), ``send_pause`` (seconds
    between tries while acknowledgements come back on their own) and ``socket_timeout``.
    """

    delivery: DeliveryBuffer
    send_pause = 0.0
    socket_timeout: float

    def _send(self) -> None:
        raise NotImplementedError

    def checkpoint(self) -> bool:
        """Whether the broker took every record written so far (waiting up to ``socket_timeout`` for its
        acknowledgements): a stream checkpoint is saved only then, so a restart never skips records that
        were only in this buffer. While the broker is down, False at once."""
        return self.delivery.settle(self._send, self.socket_timeout, self.send_pause)

    @property
    def buffered(self) -> int:
        """Records held locally, not yet acknowledged by the broker."""
        return len(self.delivery)

    @property
    def connected(self) -> bool:
        return self.delivery.connected

    @property
    def stats(self) -> dict[str, int]:
        return self.delivery.stats
