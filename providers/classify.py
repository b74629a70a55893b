"""How a provider's failure is read, written once for every adapter: which statuses may succeed later, the retry
hints a service sends, and the sentences an error carries.

    retry_after(headers)      `retry-after-ms`, then `Retry-After` (seconds or an HTTP date)
    retry_info_delay(body)    Google's `google.rpc.RetryInfo` `retryDelay` ("37s")
    is_retryable_status(...)  408, 429, 5xx and an adapter's extra statuses may succeed later
    classify_status(...)      an HTTP status -> ProviderUnavailable (retry) or ProviderRejected (don't)
    transport_errors(...)     httpx timeouts and connection failures -> ProviderUnavailable

Each adapter writes one error classifier of its own (content policy, provider error bodies) and hands every
other case to `classify_status`, so the retry rules are the same for all providers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from core.netguard import unreachable
from models.errors import (
    AUTH,
    INVALID_REQUEST,
    NETWORK,
    RATE_LIMITED,
    SERVER_ERROR,
    TIMEOUT,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)

RETRYABLE_STATUSES = frozenset({408, 429})
REASON_CHARS = 300

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
    if is_retryable_status(status, retryable):
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


def is_retryable_status(status: int, retryable: Collection[int] = ()) -> bool:
    """408, 429, 5xx and the provider's extra `retryable` statuses may succeed later; every other 4xx will not."""
    return status in RETRYABLE_STATUSES or status in retryable or status >= 500


def as_object(value: Any) -> dict[str, Any]:
    """`value` when it is a JSON object, else an empty one: provider answers are read defensively."""
    return value if isinstance(value, dict) else {}
