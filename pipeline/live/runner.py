"""The in-process live runner: every feed on threads of this process (no Ray).

The Ray runtime (:mod:`pipeline.live.cluster`) is the default; this one hosts the same
:class:`~pipeline.live.stream.LiveStream` and serves the same interface, for a machine without Ray and as the
benchmark's baseline.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from operators.records import Prompt
from operators.sinks import build_sinks
from operators.output_files import prepare_out_dir
from pipeline.live.stream import LiveStream, LiveStreamSpec


class LiveRunner:
    """Runs several live streams until :meth:`stop`; streams can be added and removed while it runs.

    The control plane (:mod:`pipeline.control`: the HTTP API and the Redis control stream) drives a runner
    only through :meth:`add_stream`, :meth:`remove_stream`, :meth:`add_prompts`, :meth:`remove_prompts`,
    :meth:`stream_report`, :meth:`summary` and :meth:`latest_frame_jpeg`, after validating each command;
    an unknown ``stream_id`` raises KeyError.
    """

    def __init__(self, sinks: Sequence[str], out_dir: str | Path, segmenter: str = "default",
                 segmenter_options: dict[str, Any] | None = None,
                 on_status: Callable[[dict], None] | None = None) -> None:
        prepare_out_dir(out_dir)
        build_sinks(sinks, out_dir)  # fail on a bad sink name before any stream starts
        self.sinks = list(sinks)
        self.out_dir = Path(out_dir)
        self.segmenter = segmenter
        self.segmenter_options = segmenter_options
        self.on_status = on_status
        self.streams: dict[str, LiveStream] = {}
        self._stopping = threading.Event()

    def add_stream(self, spec: LiveStreamSpec) -> LiveStream:
        """Start a stream; ValueError if one of that id still runs (a stopped one's report is replaced)."""
        if spec.stream_id in self.streams and self.streams[spec.stream_id].is_alive():
            raise ValueError(f"stream {spec.stream_id!r} is already running")
        stream = LiveStream(spec.placed(self.out_dir, self.sinks, self.segmenter), self.segmenter_options,
                            self.on_status)
        self.streams[spec.stream_id] = stream
        return stream.start()

    def remove_stream(self, stream_id: str, timeout: float | None = None) -> dict:
        """Stop a stream, flush its sinks (waiting up to ``timeout`` s) and return its final report."""
        stream = self.streams[stream_id]
        stream.stop()
        stream.join(timeout)
        return stream.report().to_dict()

    def add_prompts(self, stream_id: str, prompts: Sequence[Prompt]) -> list[int]:
        """Give a connected stream prompts checked against its frame size, with ids it has not used; they
        apply from its next frame. Returns their ids."""
        self.streams[stream_id].add_prompts(prompts)
        return [p.prompt_id for p in prompts]

    def remove_prompts(self, stream_id: str, prompt_ids: Sequence[int]) -> None:
        """Stop segmenting these prompts of a connected stream from its next frame on."""
        self.streams[stream_id].remove_prompts(prompt_ids)

    def stream_report(self, stream_id: str) -> dict:
        """One stream's report: status (:class:`~pipeline.live.scheduling.StreamStatus`), counts, latency, ``frame_size``, prompt ids."""
        return self.streams[stream_id].report().to_dict()

    def latest_frame_jpeg(self, stream_id: str) -> bytes | None:
        """The stream's last processed frame, annotated, as JPEG (None before its first frame)."""
        return self.streams[stream_id].latest_frame_jpeg()

    def stop(self) -> None:
        self._stopping.set()
        for stream in list(self.streams.values()):
            stream.stop()

    def wait(self, poll: float = 0.2, until_stopped: bool = False) -> None:
        """Block until :meth:`stop` is called (or every stream has ended, unless ``until_stopped``: streams
        may still be added), then join the streams."""
        while not self._stopping.is_set():
            if not until_stopped and self.streams and not any(s.is_alive() for s in self.streams.values()):
                break
            self._stopping.wait(poll)
        self.stop()
        for stream in list(self.streams.values()):
            stream.join()

    def summary(self) -> dict:
        streams = [s.report().to_dict() for s in self.streams.values()]
        return {"streams": streams, "failed": [s["stream_id"] for s in streams if s["status"] == "failed"]}

    def shutdown(self) -> None:
        """Nothing to release once :meth:`wait` returned: the streams' threads have ended (the Ray runner's
        counterpart stops its actors)."""
