"""A worker's metrics on WORKER_METRICS_PORT: ours (core/metrics.py) and the Temporal SDK's own, on one endpoint.

The SDK's core exports its metrics (schedule-to-start latency, slots, failures: `temporal_*`) through a
Prometheus exporter of its own, bound here to a loopback port nobody scrapes directly. Each scrape of our endpoint
reads that exposition and serves it as it came, after ours: the two share no metric family, so the texts join as
they are, and a scrape costs the worker no parsing (parsing and re-writing the SDK's 400-odd series took about
25 ms of the worker's CPU per scrape).
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_SECONDS = 2.0
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def sdk_exposition(url: str) -> bytes:
    """The SDK exporter's text; nothing when it cannot be read (the scrape still has ours)."""
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as response:  # noqa: S310 (loopback)
            body: bytes = response.read()
    except OSError as error:
        log.warning("the Temporal SDK's metrics could not be read: %s", error)
        return b""
    return body


def metrics_app(sdk_url: str) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"metrics are at /metrics\n"]
        body = generate_latest(REGISTRY) + sdk_exposition(sdk_url)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body)))])
        return [body]

    return app


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # a line per scrape is noise
        pass


def serve_worker_metrics(host: str, port: int) -> int:
    """Serve this process's metrics on host:port, with the SDK's; returns the loopback port the SDK's exporter
    must bind (`core.temporal.worker_runtime`)."""
    sdk_port = free_loopback_port()
    app = metrics_app(f"http://127.0.0.1:{sdk_port}/metrics")
    server = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    log.info("worker metrics on http://%s:%s/metrics", host, port)
    return sdk_port
