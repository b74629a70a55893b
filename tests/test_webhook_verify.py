"""Webhook verification: Standard Webhooks (against the spec's vector and the reference library), the generic
body signature, and per-job tokens."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from models.errors import WebhookRejected
from providers.webhooks import (
    job_webhook_token,
    job_webhook_url,
    verify_generic_signature,
    verify_job_token,
    verify_standard_webhook,
)

VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
VECTOR_NOW = datetime.fromtimestamp(VECTOR_TS, UTC)


def vector_headers(**overrides: str) -> dict[str, str]:
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TS), "webhook-signature": VECTOR_SIGNATURE}
    return headers | overrides


def reference_signed(secret: str, body: bytes, sent_at: datetime, webhook_id: str = "msg_ref") -> dict[str, str]:
    """Headers as the `standardwebhooks` reference library signs them."""
    signature = Webhook(secret).sign(webhook_id, sent_at, body.decode())
    return {
        "Webhook-Id": webhook_id,
        "Webhook-Timestamp": str(int(sent_at.timestamp())),
        "Webhook-Signature": signature,
    }


def test_spec_test_vector_verifies() -> None:
    assert verify_standard_webhook(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_NOW) == VECTOR_ID


def test_reference_library_signatures_verify_now() -> None:
    body = b'{"id": "p1", "status": "succeeded", "output": ["https://replicate.delivery/x/out-0.png"]}'
    headers = reference_signed(VECTOR_SECRET, body, datetime.now(UTC))
    assert verify_standard_webhook(VECTOR_SECRET, headers, body) == "msg_ref"


def test_secret_without_prefix_and_unpadded_is_accepted() -> None:
    key = VECTOR_SECRET.removeprefix("whsec_")
    assert verify_standard_webhook(key, vector_headers(), VECTOR_BODY, now=VECTOR_NOW) == VECTOR_ID


def test_any_matching_entry_among_several_is_enough() -> None:
    several = f"v1a,c29tZXRoaW5nIGVsc2U= v1,Zm9yZ2VkIHNpZ25hdHVyZQ== {VECTOR_SIGNATURE}"
    headers = vector_headers(**{"webhook-signature": several})
    assert verify_standard_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_NOW) == VECTOR_ID


@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        (vector_headers(**{"webhook-signature": "v1,Zm9yZ2VkIHNpZ25hdHVyZQ=="}), VECTOR_BODY, "no matching signature"),
        (vector_headers(), b'{"test": 2432232315}', "no matching signature"),
        (vector_headers(**{"webhook-id": "msg_other"}), VECTOR_BODY, "no matching signature"),
        (vector_headers(**{"webhook-signature": VECTOR_SIGNATURE.replace("v1,", "v1a,")}), VECTOR_BODY, "no v1"),
        (vector_headers(**{"webhook-signature": "v1,not base64!"}), VECTOR_BODY, "no v1"),
        (vector_headers(**{"webhook-signature": "v1,é"}), VECTOR_BODY, "no v1"),
        (vector_headers(**{"webhook-timestamp": "1614265330.5"}), VECTOR_BODY, "not integer"),
        (vector_headers(**{"webhook-timestamp": "9" * 40}), VECTOR_BODY, "not integer"),
    ],
    ids=["forged", "body-changed", "id-changed", "v1a-only", "garbage", "non-ascii", "fractional-ts", "huge-ts"],
)
def test_rejections_name_the_reason(headers: dict[str, str], body: bytes, reason: str) -> None:
    with pytest.raises(WebhookRejected, match=reason):
        verify_standard_webhook(VECTOR_SECRET, headers, body, now=VECTOR_NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_rejected(missing: str) -> None:
    headers = {key: value for key, value in vector_headers().items() if key != missing}
    with pytest.raises(WebhookRejected, match=f"missing {missing} header"):
        verify_standard_webhook(VECTOR_SECRET, headers, VECTOR_BODY, now=VECTOR_NOW)


def test_timestamp_six_minutes_old_is_rejected() -> None:
    sent_at = datetime.now(UTC) - timedelta(minutes=6)
    body = b'{"id": "p1"}'
    headers = reference_signed(VECTOR_SECRET, body, sent_at)
    with pytest.raises(WebhookRejected, match="old"):
        verify_standard_webhook(VECTOR_SECRET, headers, body)


def test_timestamp_tolerance_holds_in_both_directions() -> None:
    just_inside = VECTOR_NOW + timedelta(minutes=5)
    assert verify_standard_webhook(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=just_inside) == VECTOR_ID
    with pytest.raises(WebhookRejected, match="old"):
        verify_standard_webhook(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=just_inside + timedelta(seconds=1))
    with pytest.raises(WebhookRejected, match="future"):
        verify_standard_webhook(VECTOR_SECRET, vector_headers(), VECTOR_BODY, now=VECTOR_NOW - timedelta(minutes=6))


def test_wrong_secret_is_rejected() -> None:
    body = b'{"id": "p1"}'
    headers = reference_signed("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", body, datetime.now(UTC))
    with pytest.raises(WebhookRejected, match="no matching signature"):
        verify_standard_webhook(VECTOR_SECRET, headers, body)


def test_secret_that_is_not_base64_is_reported() -> None:
    with pytest.raises(WebhookRejected, match="not valid base64"):
        verify_standard_webhook("whsec_not*base64", vector_headers(), VECTOR_BODY, now=VECTOR_NOW)


def generic_signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize("prefix", ["", "sha256="])
def test_generic_signature_accepts_with_or_without_prefix(prefix: str) -> None:
    body = b'{"status": "succeeded"}'
    signature = prefix + generic_signature("our-secret", body)
    verify_generic_signature("our-secret", {"Webhook-Signature": signature}, body)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing webhook-signature header"),
        ({"webhook-signature": generic_signature("another-secret", b"{}")}, "does not match"),
        ({"webhook-signature": generic_signature("our-secret", b"{} ")}, "does not match"),
        ({"webhook-signature": "sha256=zz"}, "does not match"),
        ({"webhook-signature": "sha256=é"}, "does not match"),
    ],
    ids=["missing", "wrong-secret", "other-body", "garbage", "non-ascii"],
)
def test_generic_signature_rejects(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(WebhookRejected, match=reason):
        verify_generic_signature("our-secret", headers, b"{}")


def test_job_token_is_stable_url_safe_and_bound_to_provider_job_and_attempt() -> None:
    token = job_webhook_token("our-secret", "replicate", "job-1", 1)
    assert token == job_webhook_token("our-secret", "replicate", "job-1", 1)
    assert token != job_webhook_token("our-secret", "replicate", "job-2", 1)
    assert token != job_webhook_token("our-secret", "midjourney", "job-1", 1)
    assert token != job_webhook_token("our-secret", "replicate", "job-1", 2)
    assert token != job_webhook_token("other-secret", "replicate", "job-1", 1)
    assert len(token) == 64 and all(char in "0123456789abcdef" for char in token)
    assert verify_job_token("our-secret", "replicate", "job-1", "1", token) == 1


def test_job_webhook_url_carries_attempt_and_token() -> None:
    url = job_webhook_url("our-secret", "https://app.example/", "replicate", "job 1", 3)
    token = job_webhook_token("our-secret", "replicate", "job 1", 3)
    assert url == f"https://app.example/v1/webhooks/replicate/job%201?attempt=3&token={token}"


@pytest.mark.parametrize(
    ("attempt", "token", "reason"),
    [
        ("1", None, "missing job token"),
        ("1", "", "missing job token"),
        (None, job_webhook_token("our-secret", "replicate", "job-1", 1), "attempt"),
        ("-1", job_webhook_token("our-secret", "replicate", "job-1", 1), "attempt"),
        ("9" * 40, job_webhook_token("our-secret", "replicate", "job-1", 1), "attempt"),
        ("1", job_webhook_token("our-secret", "replicate", "job-2", 1), "does not match"),
        ("1", job_webhook_token("our-secret", "midjourney", "job-1", 1), "does not match"),
        ("2", job_webhook_token("our-secret", "replicate", "job-1", 1), "does not match"),
        ("1", job_webhook_token("other-secret", "replicate", "job-1", 1), "does not match"),
        ("1", "0" * 64, "does not match"),
        ("1", "é" * 64, "does not match"),
    ],
    ids=[
        "none",
        "empty",
        "no-attempt",
        "negative-attempt",
        "huge-attempt",
        "other-job",
        "other-provider",
        "other-attempt",
        "other-secret",
        "zeros",
        "non-ascii",
    ],
)
def test_job_token_rejects(attempt: str | None, token: str | None, reason: str) -> None:
    with pytest.raises(WebhookRejected, match=reason):
        verify_job_token("our-secret", "replicate", "job-1", attempt, token)
