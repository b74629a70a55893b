"""Stream tokens: how a browser's EventSource, which cannot send the API key, opens an event stream.

`POST /v1/stream-tokens` (with a key) mints one; it is passed as `?streamToken=` and works only:
- on the two stream routes, `GET /v1/jobs/{id}/events` and `GET /v1/canvases/{id}/events`, matched exactly;
- while the key that minted it is still one of API_KEYS (the token carries a keyed fingerprint of it);
- on its canvas's stream alone, when it was minted for a canvas (`workflowId`);
- for STREAM_TOKEN_SECONDS.
Tokens never reach the logs: the access log shows `streamToken=…` (and upload URLs' `token=…`) redacted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

STREAM_TOKEN_SECONDS = 900
STREAM_TOKEN_LABEL = "stream-token:v2:"
KEY_FINGERPRINT_LABEL = "stream-token-key:"
# The stream routes, and what each is a stream of (a canvas-bound token opens only that canvas's stream).
STREAM_ROUTES = (
    ("canvas", re.compile(r"^/v1/canvases/(?P<id>[A-Za-z0-9._-]{1,200})/events$")),
    ("job", re.compile(r"^/v1/jobs/(?P<id>[A-Za-z0-9._-]{1,200})/events$")),
)


@dataclass(frozen=True)
class StreamTarget:
    """The stream a request asks for: `kind` is "canvas" or "job", `id` its id."""

    kind: str
    id: str


def stream_target(method: str, path: str) -> StreamTarget | None:
    """The stream this request opens, or None for any other route (where a stream token means nothing)."""
    if method != "GET":
        return None
    for kind, pattern in STREAM_ROUTES:
        matched = pattern.match(path)
        if matched:
            return StreamTarget(kind, matched["id"])
    return None


def key_fingerprint(secret: str, key: str) -> str:
    """Which key minted a token, without the token revealing the key."""
    return hmac.new(secret.encode(), f"{KEY_FINGERPRINT_LABEL}{key}".encode(), hashlib.sha256).hexdigest()[:16]


def _mac(secret: str, expires_at: int, fingerprint: str, canvas_id: str | None) -> str:
    message = f"{STREAM_TOKEN_LABEL}{expires_at}:{fingerprint}:{canvas_id or ''}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def mint(secret: str, key: str, expires_at: int, canvas_id: str | None = None) -> str:
    """`<expiry>.<key fingerprint>.<c if canvas-bound, else a>.<hex HMAC of all that and the canvas>`."""
    fingerprint = key_fingerprint(secret, key)
    bound = "c" if canvas_id else "a"
    return f"{expires_at}.{fingerprint}.{bound}.{_mac(secret, expires_at, fingerprint, canvas_id)}"


def verify(secret: str, token: str, keys: Iterable[str], target: StreamTarget, now: float) -> bool:
    """True when `token` opens `target` now, minted by a key that is still valid."""
    parts = token.split(".")
    if len(parts) != 4:
        return False
    expiry, fingerprint, bound, mac = parts
    if not (expiry.isascii() and expiry.isdigit() and len(expiry) <= 12) or int(expiry) < now:
        return False
    if not any(hmac.compare_digest(fingerprint, key_fingerprint(secret, key)) for key in keys):
        return False  # the key was revoked (taken out of API_KEYS) since
    if bound == "c":
        if target.kind != "canvas":
            return False
        canvas_id: str | None = target.id
    elif bound == "a":
        canvas_id = None
    else:
        return False
    return hmac.compare_digest(_mac(secret, int(expiry), fingerprint, canvas_id), mac)


_SECRET_QUERY = re.compile(r"(?P<name>(?:streamToken|token)=)[^&\s\"]*")


def redact(text: str) -> str:
    """`text` with the values of `streamToken=` and `token=` query parameters replaced."""
    return _SECRET_QUERY.sub(r"\g<name>[redacted]", text)


class RedactTokens(logging.Filter):
    """Keeps stream and upload tokens out of uvicorn's access log (whose record args hold the full path)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_access_log() -> None:
    """Install RedactTokens on uvicorn's access logger (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactTokens) for existing in access.filters):
        access.addFilter(RedactTokens())
