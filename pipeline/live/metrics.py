"""Prometheus metrics of the live service: every feed's report, read at scrape time.

What is counted is a counter (``*_total``): a dashboard takes rates with ``rate()`` over the window it
chooses, instead of a lifetime mean that flattens every burst. End-to-end latency is a histogram
(``xsam_live_latency_seconds_bucket``/``_sum``/``_count``): ``histogram_quantile()`` gives any quantile over
any window, and histograms of several streams or replicas add up, which precomputed quantiles do not. Only
levels (queue depth, memory, whether a stream runs) are gauges.
"""

from __future__ import annotations

from typing import Any, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from pipeline.live.scheduling import LATENCY_BUCKETS

#: Counters: name (``_total`` added on exposition), help, the report's key.
COUNTERS = (
    ("xsam_live_frames_in", "Frames decoded", "frames_in"),
    ("xsam_live_frames_processed", "Frames processed", "frames_processed"),
    ("xsam_live_records_written", "Records every sink took", "records_written"),
    ("xsam_live_propagated_frames", "Frames whose masks optical flow carried", "propagated"),
    ("xsam_live_reconnects", "Reconnects of the feed", "reconnects"),
    ("xsam_live_decode_errors", "Frames the decoder reported damaged", "decode_errors"),
    ("xsam_live_restarts", "Stream actors started again after one died", "restarts"),
)
#: Counters by a second label: name, help, label, the report's key (a mapping of label value to count).
LABELLED_COUNTERS = (
    ("xsam_live_dropped_frames", "Frames dropped, by cause", "cause", "drops"),
    ("xsam_live_keyframes", "Keyframes, by reason", "reason", "keyframe_reasons"),
)
#: Gauges: name, help, the report's key.
GAUGES = (
    ("xsam_live_queue_depth", "Decoded frames waiting to be processed", "queue_depth"),
    ("xsam_live_memory_bytes", "Prompt memory the stream holds", "prompt_memory_bytes"),
)


def serve_metrics(runner: Any, port: int, address: str = "127.0.0.1") -> None:
    """Serve Prometheus metrics for every stream of ``runner`` on ``address:port`` (a daemon thread)."""
    registry = CollectorRegistry()
    registry.register(LiveCollector(runner))
    start_http_server(port, addr=address, registry=registry)


class LiveCollector:
    """Prometheus collector reading the runner's per-stream reports at scrape time, labelled by ``stream``."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        counters = [(CounterMetricFamily(name, text, labels=["stream"]), key) for name, text, key in COUNTERS]
        gauges = [(GaugeMetricFamily(name, text, labels=["stream"]), key) for name, text, key in GAUGES]
        labelled = [(CounterMetricFamily(name, text, labels=["stream", label]), key)
                    for name, text, label, key in LABELLED_COUNTERS]
        latency = HistogramMetricFamily("xsam_live_latency_seconds", "End-to-end latency: decoded to taken by "
                                        "every sink", labels=["stream"])
        up = GaugeMetricFamily("xsam_live_stream_up", "1 while the stream runs", labels=["stream"])
        bounds = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
        for report in self.runner.summary()["streams"]:
            stream = report["stream_id"]
            for family, key in counters + gauges:
                family.add_metric([stream], float(report[key]))
            for family, key in labelled:
                for value, count in report[key].items():
                    family.add_metric([stream, value], float(count))
            figures = report["latency"]
            latency.add_metric([stream], list(zip(bounds, map(float, figures["buckets"]))), figures["sum_s"])
            up.add_metric([stream], 1.0 if report["status"] == "running" else 0.0)
        yield from (family for family, _ in counters + labelled + gauges)
        yield from (latency, up)
