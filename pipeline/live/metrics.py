"""Prometheus metrics of the live service: every feed's report, read at scrape time."""

from __future__ import annotations

from typing import Any


def serve_metrics(runner: Any, port: int, address: str = "127.0.0.1") -> None:
    """Serve Prometheus metrics for every stream of ``runner`` on ``address:port`` (a daemon thread)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(LiveCollector(runner))
    start_http_server(port, addr=address, registry=registry)


class LiveCollector:
    """Prometheus collector reading the runner's per-stream reports at scrape time."""

    def __init__(self, runner: Any) -> None:
        self.runner = runner

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        reports = self.runner.summary()["streams"]
        families = {
            "frames_in": CounterMetricFamily("xsam_live_frames_in", "Frames decoded", labels=["stream"]),
            "frames_processed": CounterMetricFamily("xsam_live_frames_processed", "Frames processed",
                                                    labels=["stream"]),
            "reconnects": CounterMetricFamily("xsam_live_reconnects", "Reconnects", labels=["stream"]),
            "fps_in": GaugeMetricFamily("xsam_live_fps_in", "Mean decoded fps", labels=["stream"]),
            "fps_out": GaugeMetricFamily("xsam_live_fps_out", "Mean processed fps", labels=["stream"]),
            "queue_depth": GaugeMetricFamily("xsam_live_queue_depth", "Frames waiting", labels=["stream"]),
            "prompt_memory_bytes": GaugeMetricFamily("xsam_live_memory_bytes", "Per-stream memory size",
                                                     labels=["stream"]),
        }
        drops = CounterMetricFamily("xsam_live_dropped_frames", "Frames dropped", labels=["stream", "cause"])
        latency = GaugeMetricFamily("xsam_live_latency_seconds", "End-to-end latency", labels=["stream", "quantile"])
        up = GaugeMetricFamily("xsam_live_stream_up", "1 while the stream runs", labels=["stream"])
        for r in reports:
            stream = r["stream_id"]
            for key, family in families.items():
                family.add_metric([stream], float(r[key]))
            for cause, count in r["drops"].items():
                drops.add_metric([stream, cause], float(count))
            for quantile, key in (("0.5", "p50_ms"), ("0.95", "p95_ms")):
                if r["latency"][key] is not None:
                    latency.add_metric([stream, quantile], r["latency"][key] / 1000)
            up.add_metric([stream], 1.0 if r["status"] == "running" else 0.0)
        yield from families.values()
        yield from (drops, latency, up)
