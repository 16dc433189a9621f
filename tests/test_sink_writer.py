"""SinkWriter: a stream's sinks on their own thread, in order, bounded, with errors raised to the producer."""

from __future__ import annotations

import threading
import time

import pytest

from loopback import sample_record
from operators.errors import OutputError, SinkWriteError
from operators.sinks.writer import SinkWriter


class ListSink:
    """Keeps what it is given; optionally slow, failing at one frame, or failing to close."""

    def __init__(self, delay: float = 0.0, fail_at: int | None = None, fail_close: bool = False) -> None:
        self.frames: list[int] = []
        self.delay, self.fail_at, self.fail_close = delay, fail_at, fail_close
        self.closed = False

    def write(self, record) -> None:
        if record.frame_index == self.fail_at:
            raise OSError(f"disk full at frame {record.frame_index}")
        time.sleep(self.delay)
        self.frames.append(record.frame_index)

    def close(self) -> dict:
        self.closed = True
        if self.fail_close:
            raise OSError("cannot flush")
        return {"sink": "list", "frames": len(self.frames)}


def test_every_sink_gets_every_record_in_order_and_close_reports_each():
    sinks = [ListSink(), ListSink()]
    seen = []
    writer = SinkWriter(sinks, on_written=lambda record, meta: seen.append((record.frame_index, meta)))
    for i in range(100):
        writer.put(sample_record(i), meta=i * 10)
    outputs = writer.close()
    assert [s.frames for s in sinks] == [list(range(100))] * 2
    assert seen == [(i, i * 10) for i in range(100)]
    assert outputs == [{"sink": "list", "frames": 100}] * 2
    assert writer.written == 100 and writer.error is None


def test_the_queue_is_bounded_so_a_slow_sink_holds_the_producer_back():
    sink = ListSink(delay=0.01)
    writer = SinkWriter([sink], capacity=4)
    lag = []
    for i in range(30):
        writer.put(sample_record(i))
        lag.append(i + 1 - len(sink.frames))
    writer.close()
    assert max(lag) <= 4 + 2  # the queue, the record being written, and one in hand
    assert sink.frames == list(range(30))


def test_a_write_error_reaches_the_producer_and_later_records_are_not_written():
    sink = ListSink(fail_at=5)
    writer = SinkWriter([sink], capacity=2, source="clip.mp4")
    with pytest.raises(SinkWriteError, match="ListSink failed: OSError: disk full at frame 5") as raised:
        for i in range(50):
            writer.put(sample_record(i))
        writer.drain()
    assert raised.value.frame_index == 5 and raised.value.source == "clip.mp4"  # the frame that failed, not the last put
    assert isinstance(raised.value.__cause__, OSError)
    assert sink.frames == [0, 1, 2, 3, 4]
    writer.close()
    assert sink.closed and sink.frames == [0, 1, 2, 3, 4]


def test_a_sink_error_that_names_its_file_gets_the_frame_too():
    """Real sinks name the file and the OS reason (an OutputError from output_errors); the writer adds the frame."""

    class FullDisk(ListSink):
        def write(self, record):
            raise OutputError("out/cam/frames.jsonl", "cannot write: No space left on device")

    writer = SinkWriter([FullDisk()], source="clip.mp4")
    with pytest.raises(SinkWriteError, match=r"out/cam/frames.jsonl, frame 3: cannot write: No space") as raised:
        writer.put(sample_record(3))
        writer.drain()
    assert raised.value.frame_index == 3 and isinstance(raised.value.__cause__, OutputError)
    writer.close()


def test_drain_waits_for_the_queued_records():
    sink = ListSink(delay=0.005)
    writer = SinkWriter([sink])
    for i in range(20):
        writer.put(sample_record(i))
    writer.drain()
    assert sink.frames == list(range(20)), "drain returned before the records were written"
    writer.close()


def test_one_sink_failing_to_close_does_not_hide_the_others():
    good, bad = ListSink(), ListSink(fail_close=True)
    writer = SinkWriter([bad, good])
    writer.put(sample_record(0))
    outputs = writer.close()
    assert outputs == [{"sink": "ListSink", "error": "cannot flush"}, {"sink": "list", "frames": 1}]
    assert (writer.close_error.kind, writer.close_error.reason) == (
        "SinkWriteError", "ListSink failed to close: OSError: cannot flush")
    assert good.closed and bad.closed
    assert not any(t.name == "sink-writer" for t in threading.enumerate()), "the thread ended"


class CheckpointedSink(ListSink):
    """Says whether its records are durable at a checkpoint, and counts the checkpoints it was asked for."""

    def __init__(self, durable: bool) -> None:
        super().__init__()
        self.durable, self.asked = durable, []

    def checkpoint(self) -> bool:
        self.asked.append(len(self.frames))
        return self.durable


def test_a_checkpoint_is_durable_only_if_every_sink_says_so_and_each_is_asked_with_every_record():
    down, up = CheckpointedSink(durable=False), CheckpointedSink(durable=True)
    writer = SinkWriter([down, up, ListSink()])
    for i in range(10):
        writer.put(sample_record(i))
    assert writer.checkpoint() is False  # a broker still holds records back: no stream checkpoint now
    down.durable = True
    assert writer.checkpoint() is True
    writer.close()
    assert down.asked == up.asked == [10, 10]  # both asked each time, after every record was written
