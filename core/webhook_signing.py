"""Signing what we send to an app's webhook endpoints, per Standard Webhooks (https://www.standardwebhooks.com).

Each request carries `webhook-id` (the event's id, the same on every attempt, so a receiver can deduplicate),
`webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`: `v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">` under each secret in force, space-separated. After a rotation the old secret signs
beside the new one for a day, so receivers can switch over without missing an event. The `standardwebhooks`
package signs, so what we send verifies with that package (or any other implementation of the spec).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime

from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh endpoint secret: `whsec_` and 32 random bytes in base64 (the spec takes 24 to 64)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature(secrets_in_force: Sequence[str], webhook_id: str, sent_at: datetime, body: bytes) -> str:
    """The `webhook-signature` value: one `v1,<base64>` entry per secret, space-separated."""
    return " ".join(Webhook(secret).sign(webhook_id, sent_at, body) for secret in secrets_in_force)


def signed_headers(secrets_in_force: Sequence[str], webhook_id: str, sent_at: datetime, body: bytes) -> dict[str, str]:
    """The headers of one attempt."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature(secrets_in_force, webhook_id, sent_at, body),
    }
