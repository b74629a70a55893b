"""A worker's metrics on WORKER_METRICS_PORT: ours (core/metrics.py) and the Temporal SDK's own, on one endpoint.

The SDK's core exports its metrics (schedule-to-start latency, slots, failures: `temporal_*`) through a
Prometheus exporter of its own, bound here to a loopback port nobody scrapes directly; each scrape of our
endpoint reads it and serves its families beside ours, so Prometheus needs one target per worker.
"""

from __future__ import annotations

import logging
import socket
import urllib.request
from collections.abc import Iterator

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_SECONDS = 2.0


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SdkMetrics(Collector):
    """The SDK exporter's families, read at each scrape; an unreadable exporter costs the scrape nothing else."""

    def __init__(self, url: str) -> None:
        self.url = url

    def collect(self) -> Iterator[Metric]:
        try:
            with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:  # noqa: S310 (loopback)
                text = response.read().decode()
        except OSError as error:
            log.warning("the Temporal SDK's metrics could not be read: %s", error)
            return
        yield from text_string_to_metric_families(text)


def serve_worker_metrics(host: str, port: int) -> int:
    """Serve this process's metrics on host:port, with the SDK's; returns the loopback port the SDK's exporter
    must bind (`core.temporal.worker_runtime`)."""
    sdk_port = free_loopback_port()
    REGISTRY.register(SdkMetrics(f"http://127.0.0.1:{sdk_port}/metrics"))
    start_http_server(port, addr=host)
    log.info("worker metrics on http://%s:%s/metrics", host, port)
    return sdk_port
