"""HTTP plumbing shared by the provider adapters: retry hints, status classification, transport failures.

    retry_after(headers)      `retry-after-ms`, then `Retry-After` (seconds or an HTTP date)
    retry_info_delay(body)    Google's `google.rpc.RetryInfo` `retryDelay` ("37s")
    classify_status(...)      an HTTP status -> ProviderUnavailable (retry) or ProviderRejected (don't)
    transport_errors(...)     httpx timeouts and connection failures -> ProviderUnavailable
    fetch_json / stream_image one provider call, its answer read with a size cap or streamed into the sink
    poll_image                one look at a result endpoint: None while the job runs, else the image (streamed)

Each adapter writes one error classifier of its own (content policy, provider error bodies) and hands every
other case to `classify_status`, so the retry rules are the same for all providers.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from core.netguard import unreachable
from models.errors import (
    AUTH,
    BAD_OUTPUT,
    INVALID_REQUEST,
    NETWORK,
    RATE_LIMITED,
    SERVER_ERROR,
    TIMEOUT,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from models.guards import loads_bounded
from providers.base import OutputSink

__all__ = [
    "ErrorClassifier",
    "as_object",
    "classify_status",
    "declares_more_than",
    "decode_base64",
    "describe_body",
    "error_reason",
    "fetch_json",
    "json_answer_limit",
    "parse_json",
    "poll_image",
    "read_at_most",
    "require_client",
    "retry_after",
    "retry_info_delay",
    "stream_image",
    "transport_errors",
]

RETRYABLE_STATUSES = frozenset({408, 429})
ERROR_BODY_LIMIT = 64 * 1024
REASON_CHARS = 300
JSON_OVERHEAD_BYTES = 1024 * 1024

ErrorClassifier = Callable[[httpx.Response, bytes], ProviderError]
"""Turns a provider's non-2xx answer (status, headers and the first bytes of its body) into a ProviderError."""


def retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> timedelta | None:
    """The server's wait hint: `retry-after-ms` first (OpenAI), then `Retry-After` in seconds or as an HTTP date."""
    milliseconds = _non_negative_float(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return timedelta(milliseconds=milliseconds)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _non_negative_float(value)
    if seconds is not None:
        return timedelta(seconds=seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when - (now or datetime.now(UTC)), timedelta(0))


def retry_info_delay(payload: Any) -> timedelta | None:
    """Google's hint, in the error body: `error.details[]` of type `google.rpc.RetryInfo`, `retryDelay: "37s"`."""
    details = as_object(as_object(payload).get("error")).get("details")
    for detail in map(as_object, details if isinstance(details, list) else []):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            return _protobuf_duration(detail.get("retryDelay"))
    return None


def _protobuf_duration(value: Any) -> timedelta | None:
    """A protobuf Duration in its JSON form ("37s", "1.5s") or as {"seconds": ..., "nanos": ...}."""
    if isinstance(value, str) and value.endswith("s"):
        seconds = _non_negative_float(value[:-1])
        return None if seconds is None else timedelta(seconds=seconds)
    if isinstance(value, dict):
        seconds = _non_negative_float(str(value.get("seconds", 0))) or 0.0
        nanos = _non_negative_float(str(value.get("nanos", 0))) or 0.0
        return timedelta(seconds=seconds + nanos / 1e9)
    return None


def _non_negative_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def classify_status(
    provider: str,
    status: int,
    reason: str,
    *,
    retry_after: timedelta | None = None,
    retryable: Collection[int] = (),
    key_setting: str | None = None,
) -> ProviderError:
    """The common rule for an error status once the adapter has ruled out its own special cases.

    408, 429, 5xx and the provider's extra `retryable` statuses may succeed later; every other 4xx will not.
    """
    detail = f"{provider} answered HTTP {status}" + (f": {reason}" if reason else "")
    if status in RETRYABLE_STATUSES or status in retryable or status >= 500:
        cause = {429: RATE_LIMITED, 408: TIMEOUT}.get(status, SERVER_ERROR)
        return ProviderUnavailable(detail, retry_after=retry_after, cause=cause)
    if status in (401, 403):
        key_hint = f"Check {key_setting} and" if key_setting else "Check the credentials and"
        return ProviderRejected(f"{detail}. {key_hint} the account's access to this model.", type=AUTH)
    if status == 402:
        return ProviderRejected(f"{detail}. Check the account's plan and credits.", type=AUTH)
    return ProviderRejected(f"{detail}. Check the request's parameters.", type=INVALID_REQUEST)


@contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Timeouts, refused connections and resets are transient: they become ProviderUnavailable."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ProviderUnavailable(f"{provider} did not answer in time ({type(exc).__name__})", cause=TIMEOUT) from exc
    except httpx.TransportError as exc:
        raise ProviderUnavailable(f"Could not reach {provider}: {unreachable(exc)}.", cause=NETWORK) from exc


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


def as_object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: provider answers are read defensively."""
    return value if isinstance(value, dict) else {}


def describe_body(body: bytes) -> str:
    """A short single-line excerpt of a body for error messages."""
    return _shorten(body[: REASON_CHARS * 4].decode("utf-8", errors="replace"))


def error_reason(message: Any, body: bytes) -> str:
    """The provider's own message when it gave one, else an excerpt of the body (short, no final full stop)."""
    if isinstance(message, str) and message.strip():
        return _shorten(message).rstrip(".")
    return describe_body(body).rstrip(".")


def _shorten(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 1] + "…"


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
