"""Live feeds: freshest-frame scheduling, one stream's threads, the Ray and in-process runtimes, ``live``.

* :mod:`~pipeline.live.scheduling`: the freshest-frame queue, latency figures, the stream status enum;
* :mod:`~pipeline.live.feed` and :mod:`~pipeline.live.stream`: one feed as a reader, and the stream session
  hosting it (snapshots, restart, its report);
* :mod:`~pipeline.live.cluster`: the Ray runtime (a stream actor per feed over the nodes, failover);
* :mod:`~pipeline.live.runner`: every feed in this process;
* :mod:`~pipeline.live.cli` and :mod:`~pipeline.live.metrics`: the command and its Prometheus metrics.

The Ray runtime is imported on use: ``import pipeline.live`` does not import Ray.
"""

from pipeline.live.cli import add_live_parser, live_stream_defaults, run_live_command
from pipeline.live.metrics import LiveCollector, serve_metrics
from pipeline.live.runner import LiveRunner
from pipeline.live.scheduling import (
    DROP_LATENCY, DROP_QUEUE_FULL, WORKER_RESTARTED, FreshestFrameQueue, LatencyHistogram, StreamStatus,
)
from pipeline.live.stream import LiveReport, LiveStream, LiveStreamSpec

__all__ = [
    "DROP_LATENCY", "DROP_QUEUE_FULL", "WORKER_RESTARTED", "FreshestFrameQueue", "LatencyHistogram", "LiveCollector",
    "LiveReport", "LiveRunner", "LiveStream", "LiveStreamSpec", "StreamStatus", "add_live_parser",
    "live_stream_defaults", "run_live_command", "serve_metrics",
]
