"""Moving bytes to and from a provider, with size caps: one JSON call, an image streamed into the sink, one poll.

    fetch_json / stream_image one provider call, its answer read with a size cap or streamed into the sink
    poll_image                one look at a result endpoint: None while the job runs, else the image (streamed)
    read_at_most, parse_json  bounded reads of a body

Failures go through `providers.classify`, so every adapter retries the same way.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx

from models.errors import (
    BAD_OUTPUT,
    ProviderRejected,
)
from models.guards import loads_bounded
from providers.base import OutputSink
from providers.classify import REASON_CHARS, ErrorClassifier, describe_body, transport_errors

ERROR_BODY_LIMIT = 64 * 1024
JSON_OVERHEAD_BYTES = 1024 * 1024


def require_client(http: httpx.AsyncClient | None, provider: str) -> httpx.AsyncClient:
    """Registries built for listing and validation have no client; calling a provider from one is a wiring bug."""
    if http is None:
        raise RuntimeError(f"the {provider} adapter was built without an HTTP client and cannot call the service")
    return http


async def read_at_most(response: httpx.Response, limit: int) -> bytes:
    """Up to `limit + 1` bytes of the body: a result longer than `limit` means the body was too large."""
    chunks: list[bytes] = []
    received = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        received += len(chunk)
        if received > limit:
            break
    return b"".join(chunks)[: limit + 1]


def declares_more_than(response: httpx.Response, limit: int) -> bool:
    """True when Content-Length already says the body is over `limit`, so nothing needs to be read."""
    declared = response.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


def parse_json(body: bytes) -> Any:
    """The decoded JSON body, or None when it is not JSON (or nests too deep to parse safely)."""
    try:
        return loads_bounded(body)
    except ValueError:
        return None


def decode_base64(provider: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderRejected(f"{provider} sent an image that is not valid base64", type=BAD_OUTPUT) from exc


def json_answer_limit(max_image_bytes: int, images: int) -> int:
    """How much JSON to accept for `images` base64-encoded images (4/3 inflation plus room for the rest)."""
    return max_image_bytes * max(images, 1) * 4 // 3 + JSON_OVERHEAD_BYTES


# A model list (GET /models) is a few hundred small objects; this bounds what one may make us read.
MODEL_LIST_LIMIT = 4 * 1024 * 1024


async def fetch_json(
    http: httpx.AsyncClient,
    provider: str,
    request: httpx.Request,
    *,
    classify: ErrorClassifier,
    limit: int,
) -> tuple[dict[str, Any], httpx.Headers]:
    """One call whose answer is a JSON object, read with a size cap; non-2xx answers go through `classify`."""
    with transport_errors(provider):
        response = await http.send(request, stream=True)
        try:
            if not response.is_success:
                raise classify(response, await read_at_most(response, ERROR_BODY_LIMIT))
            if declares_more_than(response, limit):
                raise _too_large(provider, limit)
            body = await read_at_most(response, limit)
        finally:
            await response.aclose()
    if len(body) > limit:
        raise _too_large(provider, limit)
    payload = parse_json(body)
    if not isinstance(payload, dict):
        content_type = response.headers.get("content-type", "an unknown type")
        raise ProviderRejected(
            f"{provider} answered with {content_type} instead of JSON: {describe_body(body)}", type=BAD_OUTPUT
        )
    return payload, response.headers


def _too_large(provider: str, limit: int) -> ProviderRejected:
    return ProviderRejected(f"{provider} sent an answer larger than {limit} bytes; refusing it", type=BAD_OUTPUT)


async def stream_image(
    http: httpx.AsyncClient,
    provider: str,
    request: httpx.Request,
    sink: OutputSink,
    *,
    classify: ErrorClassifier,
    inspect: Callable[[httpx.Headers], None] | None = None,
) -> httpx.Headers:
    """One call whose answer is the image itself, streamed into the sink without being held in memory.

    `inspect` sees the headers before a byte is stored and may raise (e.g. Stability's CONTENT_FILTERED).
    """
    async with _streamed(http, provider, request) as response:
        await _store_image_answer(provider, response, sink, classify=classify, inspect=inspect)
    return response.headers


async def poll_image(
    http: httpx.AsyncClient,
    provider: str,
    request: httpx.Request,
    sink: OutputSink,
    *,
    classify: ErrorClassifier,
    inspect: Callable[[httpx.Headers], None] | None = None,
    pending_status: int = 202,
) -> httpx.Headers | None:
    """One look at a result endpoint that answers `pending_status` while the job runs and the image once it is
    done: None while pending, else the headers of the image, which went into the sink as with `stream_image`."""
    async with _streamed(http, provider, request) as response:
        if response.status_code == pending_status:
            return None
        await _store_image_answer(provider, response, sink, classify=classify, inspect=inspect)
    return response.headers


@asynccontextmanager
async def _streamed(http: httpx.AsyncClient, provider: str, request: httpx.Request) -> AsyncIterator[httpx.Response]:
    """The answer to `request`, read as a stream and closed afterwards; transport failures become transient."""
    with transport_errors(provider):
        response = await http.send(request, stream=True)
        try:
            yield response
        finally:
            await response.aclose()


async def _store_image_answer(
    provider: str,
    response: httpx.Response,
    sink: OutputSink,
    *,
    classify: ErrorClassifier,
    inspect: Callable[[httpx.Headers], None] | None,
) -> None:
    if not response.is_success:
        raise classify(response, await read_at_most(response, ERROR_BODY_LIMIT))
    await _require_image(provider, response)
    if inspect is not None:
        inspect(response.headers)
    await sink.store_stream(response.aiter_bytes())


async def _require_image(provider: str, response: httpx.Response) -> None:
    content_type = response.headers.get("content-type", "")
    if not content_type.lower().startswith("image/"):
        excerpt = describe_body(await read_at_most(response, REASON_CHARS))
        raise ProviderRejected(
            f"{provider} answered with {content_type or 'no content type'} instead of an image: {excerpt}",
            type=BAD_OUTPUT,
        )
