"""A stream's sinks on a thread of their own: RLE encoding, files and brokers off the processing path.

The thread is in the producer's process, so records are never pickled to reach it. Writes stay in
record order; the queue is bounded, so a slow sink holds the producer back instead of piling
records up. A write error is raised to the producer at its next ``put`` or ``drain``; records after
it are not written.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Sequence

from operators.errors import PipelineError, SinkWriteError
from operators.records import FrameRecord
from operators.sinks.base import Sink

_STOP = object()


class SinkWriter:
    """Writes records to ``sinks`` on one background thread, in order.

    ``on_written(record, meta)`` runs on that thread after every sink took ``record`` (``meta`` is what
    :meth:`put` was given with it: a capture time, say). ``source`` (the video or URL) names a write
    error, with the sink and the frame that failed.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        capacity: int = 32,
        name: str = "sink-writer",
        source: str = "",
        on_written: Callable[[FrameRecord, Any], None] | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.source = source
        self.written = 0
        self.error: BaseException | None = None
        self.close_error: PipelineError | None = None  # the first sink's failure to close, named
        self._on_written = on_written
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if self.error is None:  # after an error, records are taken but not written: the producer stops
                    self._write(*item)
            except BaseException as exc:  # noqa: BLE001 - raised to the producer
                self.error = exc
            finally:
                self._queue.task_done()

    def _write(self, record: FrameRecord, meta: Any) -> None:
        for sink in self.sinks:
            try:
                sink.write(record)
            except PipelineError as exc:  # the sink named the file or broker and why; add the frame
                raise SinkWriteError(exc.source, exc.reason, record.frame_index) from exc
            except Exception as exc:  # noqa: BLE001 - named with the sink and the frame, raised to the producer
                reason = f"{type(sink).__name__} failed: {type(exc).__name__}: {exc}"
                raise SinkWriteError(self.source or record.stream_id, reason, record.frame_index) from exc
        self.written += 1
        if self._on_written is not None:
            self._on_written(record, meta)

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, record: FrameRecord, meta: Any = None) -> None:
        """Queue ``record``; waits while the queue is full. Raises an earlier write's error."""
        self._raise()
        self._queue.put((record, meta))

    def drain(self) -> None:
        """Wait until every queued record is written; raises a write's error."""
        self._queue.join()
        self._raise()

    def checkpoint(self) -> bool:
        """Wait until every queued record is written, then let each sink that can make it durable
        (``checkpoint()``: the MP4 sink finishes a part, a broker sink tries to have everything acknowledged).
        True when every sink holds every record durably: only then may the producer save a stream checkpoint
        that says these records are written."""
        self.drain()
        durable = [sink.checkpoint() for sink in self.sinks if hasattr(sink, "checkpoint")]
        return all(durable)

    def close(self) -> list[dict]:
        """Write what is queued, end the thread and close every sink; one output dict per sink.

        A sink failing to close is reported in its dict (``error``), never hiding the others, and the first
        such failure in :attr:`close_error` (the stream's output is incomplete); a write error stays in
        :attr:`error`, for the producer to report.
        """
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        outputs = []
        for sink in self.sinks:
            try:
                outputs.append(sink.close())
            except Exception as exc:  # noqa: BLE001
                outputs.append({"sink": type(sink).__name__, "error": str(exc) or repr(exc)})
                if self.close_error is None:
                    self.close_error = exc if isinstance(exc, PipelineError) else SinkWriteError(
                        self.source, f"{type(sink).__name__} failed to close: {type(exc).__name__}: {exc}")
        return outputs
