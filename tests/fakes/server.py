"""Serve an ASGI app with uvicorn on a free loopback port, and record what it received.

Every fake provider app is served this way, so adapters talk to it over real sockets.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
