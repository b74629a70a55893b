"""Verifying provider callbacks: every scheme lives here, and adapters call it from `verify_webhook`.

Three schemes:

- Standard Webhooks (Replicate, OpenAI and many others): headers `webhook-id`, `webhook-timestamp` and
  `webhook-signature`; the signature is base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")) under a `whsec_`
  secret. See https://www.standardwebhooks.com.
- The generic scheme: header `webhook-signature` holds the hex HMAC-SHA256 of the raw body under WEBHOOK_SECRET.
- Per-attempt tokens, on every webhook URL we hand out: `?attempt=N&token=job_webhook_token(WEBHOOK_SECRET,
  provider, job_id, N)`. Neither signature scheme covers the URL, so the token is what binds a delivery to the
  job, the provider and the submit attempt that URL was made for; for providers that do not sign
  (midjourney-proxy) it is the whole proof.

Every check compares bytes in constant time (headers and query values may hold any characters) and raises
WebhookRejected with the precise reason, never the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from models.errors import WebhookRejected

__all__ = [
    "DEFAULT_TOLERANCE",
    "job_webhook_token",
    "job_webhook_url",
    "verify_generic_signature",
    "verify_job_token",
    "verify_standard_webhook",
]

DEFAULT_TOLERANCE = timedelta(minutes=5)
STANDARD_SECRET_PREFIX = "whsec_"
GENERIC_SIGNATURE_PREFIX = "sha256="
# Tokens are MACs of a labelled message, so a token can never double as a generic signature of some body.
JOB_TOKEN_LABEL = "job-webhook-token:"


def verify_standard_webhook(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: timedelta = DEFAULT_TOLERANCE,
    now: datetime | None = None,
) -> str:
    """Verify a Standard Webhooks delivery over the exact raw body; return its `webhook-id`.

    Accepts when any `v1,<base64>` entry of `webhook-signature` matches (asymmetric `v1a` entries are skipped)
    and the timestamp is within `tolerance` of `now` in either direction.
    """
    lowered = _lower_keys(headers)
    webhook_id = _required_header(lowered, "webhook-id")
    timestamp = _required_header(lowered, "webhook-timestamp")
    signatures = _required_header(lowered, "webhook-signature")
    _check_timestamp(timestamp, tolerance, now or datetime.now(UTC))
    signed_content = f"{webhook_id}.{timestamp}.".encode() + body
    expected = hmac.new(_standard_key(secret), signed_content, hashlib.sha256).digest()
    candidates = _v1_signatures(signatures)
    if not candidates:
        raise WebhookRejected("webhook-signature has no v1 signature")
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise WebhookRejected("no matching signature in webhook-signature")
    return webhook_id


def verify_generic_signature(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Verify `webhook-signature: [sha256=]<hex HMAC-SHA256 of the raw body>` under our WEBHOOK_SECRET."""
    signature = _required_header(_lower_keys(headers), "webhook-signature").strip()
    signature = signature.removeprefix(GENERIC_SIGNATURE_PREFIX)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise WebhookRejected("webhook-signature does not match the body")


def job_webhook_token(secret: str, provider: str, job_id: str, attempt: int) -> str:
    """The token of one submit attempt's webhook URL: hex HMAC-SHA256 (URL-safe as it stands)."""
    message = f"{JOB_TOKEN_LABEL}{provider}:{job_id}:{attempt}"
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def job_webhook_url(secret: str, base_url: str, provider: str, job_id: str, attempt: int) -> str:
    """Where `provider` calls back for submit attempt `attempt` of `job_id`, token included."""
    token = job_webhook_token(secret, provider, job_id, attempt)
    return f"{base_url.rstrip('/')}/v1/webhooks/{provider}/{quote(job_id, safe='')}?attempt={attempt}&token={token}"


def verify_job_token(secret: str, provider: str, job_id: str, attempt: str | None, token: str | None) -> int:
    """The submit attempt the URL was made for; raises WebhookRejected unless `token` is its token."""
    if not token:
        raise WebhookRejected("missing job token")
    if not attempt or not attempt.isascii() or not attempt.isdigit() or len(attempt) > 6:
        raise WebhookRejected("missing or malformed attempt")
    expected = job_webhook_token(secret, provider, job_id, int(attempt))
    if not hmac.compare_digest(expected.encode(), token.encode()):
        raise WebhookRejected(f"job token does not match this {provider} job")
    return int(attempt)


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise WebhookRejected(f"missing {name} header")
    return value


def _check_timestamp(timestamp: str, tolerance: timedelta, now: datetime) -> None:
    # Twelve digits reach the year 33658; longer values are garbage and would overflow timedelta.
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookRejected(f"webhook-timestamp is not integer Unix seconds: {timestamp[:32]!r}")
    age = timedelta(seconds=now.timestamp() - int(timestamp))
    if age > tolerance:
        raise WebhookRejected(f"webhook-timestamp is {age} old (tolerance {tolerance})")
    if -age > tolerance:
        raise WebhookRejected(f"webhook-timestamp is {-age} in the future (tolerance {tolerance})")


def _standard_key(secret: str) -> bytes:
    encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:  # binascii.Error, or characters outside ASCII
        raise WebhookRejected("the configured webhook secret is not valid base64 (expected whsec_...)") from None
    if not key:
        raise WebhookRejected("the configured webhook secret is empty")
    return key


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded `v1` entries; other versions and malformed entries are skipped."""
    decoded = []
    for entry in header.split():
        version, _, signature = entry.partition(",")
        if version != "v1":
            continue
        try:
            decoded.append(base64.b64decode(signature, validate=True))
        except ValueError:  # binascii.Error, or characters outside ASCII
            continue
    return decoded
