"""Limits the API enforces before work starts: the size and nesting of a request body, and how many webhooks are
handled at once.

A cap on request bodies, enforced before a route reads them: a 100 MB body must not reach the JSON parser, and
neither must a JSON body nested deeper than MAX_BODY_JSON_DEPTH (422 `json_too_deep`).

Declared lengths over the cap are refused at once; a body sent without a length is read here and refused as soon
as it passes the cap. Either way the answer is the usual JSON error, 413.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError
from models.guards import MAX_BODY_JSON_DEPTH, json_nesting_exceeds


class BodyLimit:
    """ASGI middleware: requests whose body exceeds `max_bytes` get 413 `payload_too_large`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, own_limit_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # Routes that cap their bodies themselves (an upload's announced size) and stream them to disk.
        self.own_limit_prefixes = own_limit_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith(self.own_limit_prefixes):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        # No declared length (chunked): read it here, up to the cap, and hand the app what was read.
        try:
            read = await _read_body(receive, self.max_bytes)
        except _BodyTooLarge:
            await self._refuse(send)
            return
        await self.app(scope, _replayed(read, receive), send)

    async def _refuse(self, send: Send) -> None:
        await send_error(send, 413, "payload_too_large", f"Request bodies are limited to {self.max_bytes} bytes.")


class JsonDepthLimit:
    """ASGI middleware: a JSON body nested deeper than MAX_BODY_JSON_DEPTH gets 422 `json_too_deep` before
    anything parses it (the parser recurses once per level). Sits inside BodyLimit, so what it reads is capped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        read = await _read_body(receive)
        if isinstance(read, bytes) and json_nesting_exceeds(read):
            await send_error(send, 422, "json_too_deep", JSON_TOO_DEEP_MESSAGE)
            return
        await self.app(scope, _replayed(read, receive), send)


JSON_TOO_DEEP_MESSAGE = f"The JSON body nests deeper than {MAX_BODY_JSON_DEPTH} levels."


def _is_json(scope: Scope) -> bool:
    headers: dict[bytes, bytes] = dict(scope["headers"])
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return content_type == b"application/json" or content_type.endswith(b"+json")


async def send_error(send: Send, status: int, code: str, message: str) -> None:
    """An error answer in the API's shape, from middleware (which cannot raise ApiError)."""
    body = json.dumps({"code": code, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    """The body passed the cap while it was read."""


async def _read_body(receive: Receive, max_bytes: int | None = None) -> bytes | Message:
    """The whole body, or the message that came instead of it (a disconnect); _BodyTooLarge past `max_bytes`."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return message
        body.extend(message.get("body", b""))
        if max_bytes is not None and len(body) > max_bytes:
            raise _BodyTooLarge
        if not message.get("more_body", False):
            return bytes(body)


def _replayed(read: bytes | Message, receive: Receive) -> Receive:
    """A `receive` that hands the app what `_read_body` read, as if nobody had read it before."""
    if isinstance(read, bytes):
        return _replay({"type": "http.request", "body": read, "more_body": False}, receive)
    return _replay(read)


def _replay(first: Message, then: Receive | None = None) -> Receive:
    """A `receive` that returns `first`, then defers to `then` (for the disconnect that follows)."""
    pending = [first]

    async def receive() -> Message:
        if pending:
            return pending.pop()
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


class InFlight:
    """How many webhooks this process is handling; past `limit`, new ones are shed (503 + Retry-After)."""

    def __init__(self, limit: int, *, retry_after_seconds: int) -> None:
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds
        self.count = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        if self.count >= self.limit:
            raise ApiError(
                503,
                "overloaded",
                f"{self.count} webhooks are being handled; retry this one shortly.",
                headers={"Retry-After": str(self.retry_after_seconds)},
            )
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1
