"""Canvas tokens: what a browser holds instead of an API key.

A canvas app's backend calls `POST /v1/canvas-tokens` with its tenant key once per user session and hands the token
to the browser. The token works only:
- on one canvas of one tenant: its board, nodes, jobs, canvas runs and event streams (api/auth.py lists the routes);
- for `read` (look) or `write` (also start, cancel and save);
- until it expires, and only while the key that minted it is valid (revoking the key ends its tokens);
- as `Authorization: Bearer <token>`, or as `?token=` on the two event streams, since EventSource cannot send
  headers.

A token is `ct1.<claims>.<mac>`: the claims are base64url JSON, the MAC an HMAC-SHA256 of them under WEBHOOK_SECRET.
Nothing is stored, so any API process verifies any token. Tokens never reach the logs: the access log shows
`token=…` redacted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from enum import StrEnum

TOKEN_PREFIX = "ct1."
_MAC_LABEL = b"canvas-token:v1:"
_KEY_FINGERPRINT_LABEL = "canvas-token-key:"


class CanvasAccess(StrEnum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class CanvasClaims:
    """What a token grants: `access` to `workflow_id` of `tenant_id`, until `expires_at` (Unix seconds), on behalf
    of the key `key_ref` (a stored key's id, or `env:<fingerprint>` for one of API_KEYS)."""

    tenant_id: str
    workflow_id: str
    access: CanvasAccess
    expires_at: int
    key_ref: str


def env_key_ref(secret: str, key: str) -> str:
    """How a token names the API_KEYS entry that minted it, without revealing the key."""
    digest = hmac.new(secret.encode(), f"{_KEY_FINGERPRINT_LABEL}{key}".encode(), hashlib.sha256).hexdigest()
    return "env:" + digest[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _mac(secret: str, claims: str) -> str:
    return _b64(hmac.new(secret.encode(), _MAC_LABEL + claims.encode(), hashlib.sha256).digest())


def mint(secret: str, claims: CanvasClaims) -> str:
    body = {
        "t": claims.tenant_id,
        "c": claims.workflow_id,
        "a": claims.access.value,
        "e": claims.expires_at,
        "k": claims.key_ref,
    }
    encoded = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    return f"{TOKEN_PREFIX}{encoded}.{_mac(secret, encoded)}"


def is_canvas_token(presented: str) -> bool:
    return presented.startswith(TOKEN_PREFIX)


def verify(secret: str, token: str, now: float) -> CanvasClaims | None:
    """The token's claims when its MAC is right and it has not expired; None otherwise. Whether its key is still
    valid is the caller's question (it needs the database)."""
    encoded, _, mac = token.removeprefix(TOKEN_PREFIX).partition(".")
    if not encoded or not hmac.compare_digest(_mac(secret, encoded).encode(), mac.encode()):
        return None
    try:
        body = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        claims = CanvasClaims(
            tenant_id=str(body["t"]),
            workflow_id=str(body["c"]),
            access=CanvasAccess(body["a"]),
            expires_at=int(body["e"]),
            key_ref=str(body["k"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None  # signed by us yet unreadable: only a token from another version would be
    return claims if claims.expires_at > now else None


_SECRET_QUERY = re.compile(r"(?P<name>(?:token)=)[^&\s\"]*")


def redact(text: str) -> str:
    """`text` with the values of `token=` query parameters (canvas tokens, upload URLs' signatures) replaced."""
    return _SECRET_QUERY.sub(r"\g<name>[redacted]", text)


class RedactTokens(logging.Filter):
    """Keeps canvas and upload tokens out of uvicorn's access log (whose record args hold the full path)."""

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
