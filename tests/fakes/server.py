"""Serve an ASGI app with uvicorn on a free loopback port, and record what it received.

Every fake provider app is served this way, so adapters talk to it over real sockets.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn


def _below_ephemeral_ports() -> range:
    """Ports under the kernel's range for outgoing connections' own ports (32768-60999 unless configured)."""
    configured = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(configured.read_text().split()[0]) if configured.exists() else 32768
    return range(max(1024, low - 12000), low)


def free_port() -> int:
    """A free loopback port for a server to bind, now or after a restart. It comes from below the ephemeral range:
    a port from that range can be taken before the server binds it (or while it restarts) by any connection's own
    port, and a client that dials a free port there can even connect to itself (TCP simultaneous open), as the
    API does while it waits for a Temporal that is not up yet."""
    for port in random.sample(_below_ephemeral_ports(), 100):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class Recorder:
    """Requests in arrival order; tests assert on them field by field."""

    requests: list[RecordedRequest] = field(default_factory=list)

    def matching(self, path_prefix: str) -> list[RecordedRequest]:
        return [request for request in self.requests if request.path.startswith(path_prefix)]

    def clear(self) -> None:
        self.requests.clear()


@asynccontextmanager
async def serve(app: Any, port: int | None = None, *, lifespan: bool = False) -> AsyncIterator[str]:
    """Run `app` on 127.0.0.1 until the context exits; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on" if lifespan else "off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


INPUT_HOST = "img.test"


def mock_http(
    answer: Callable[[httpx.Request], httpx.Response], *, input_image: bytes | None = None
) -> tuple[httpx.AsyncClient, list[httpx.Request]]:
    """A client on httpx.MockTransport, for request-mapping tests that need no socket: every request to the
    service is kept in the list and answered by `answer`; `http://img.test/...` serves `input_image` (allowlist
    `img.test` to let adapters fetch it)."""
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == INPUT_HOST and input_image is not None:
            return httpx.Response(200, content=input_image, headers={"content-type": "image/png"})
        sent.append(request)
        return answer(request)

    return httpx.AsyncClient(transport=httpx.MockTransport(handle)), sent
