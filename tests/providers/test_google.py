"""Google: Gemini image models on the Gemini API and Vertex AI, their usage-priced cost and errors, against the
fake (which answers shut-down models as Google does now)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from core.config import Settings
from models.errors import AUTH, ProviderRejected, ProviderUnavailable
from models.payloads import PromptSpec, ProviderCall
from providers.adapters import google
from providers.adapters.google import GoogleProvider
from tests.fakes.base import image_bytes
from tests.fakes.google import GOOGLE_GENERATE_CONTENT
from tests.fakes.server import RecordedRequest, mock_http
from tests.fixtures.providers import E2E_PROMPT, GOOGLE_KEY, Case
from tests.fixtures.sync_adapters import CollectingSink, call_for, generate, settings_for


async def test_gemini_image_model_calls_generate_content_once_per_output(sync_fake, http, sink):
    provider = google.GoogleProvider.from_settings(settings_for(sync_fake.base_url), http)

    provenance = await provider.generate(call_for("gemini-3.1-flash-image", "google", size="2560x1080", n=2), sink)

    assert len(sync_fake.recorder.requests) == 2
    for request in sync_fake.recorder.requests:
        assert request.path == "/v1beta/models/gemini-3.1-flash-image:generateContent"
        assert request.headers["x-goog-api-key"] == GOOGLE_KEY
        assert request.json() == {
            "contents": [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": "21:9", "imageSize": "1K"},
            },
        }
    assert sink.ways == ["bytes", "bytes"]
    assert sink.fractions == [0.5, 1.0]
    assert provenance.provider_job_id
    # Two calls, each 9 prompt tokens at $0.50/1M and 1120 image tokens at $60/1M (the fake's usageMetadata).
    assert provenance.cost_usd == pytest.approx(2 * (9 * 0.5 + 1120 * 60) / 1_000_000, abs=1e-5)


async def test_gemini_on_vertex_uses_the_bearer_token_path(sync_fake, http, sink):
    settings = settings_for(
        sync_fake.base_url,
        GOOGLE_API_KEY=None,
        GOOGLE_VERTEX_PROJECT="proj-1",
        GOOGLE_VERTEX_LOCATION="europe-west4",
        GOOGLE_VERTEX_TOKEN="ya29.test-token",
        GOOGLE_VERTEX_BASE_URL=sync_fake.base_url,
    )
    provider = google.GoogleProvider.from_settings(settings, http)

    provenance = await provider.generate(call_for("gemini-3-pro-image", "google", quality="high"), sink)

    [request] = sync_fake.recorder.requests
    assert request.path == (
        "/v1/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-3-pro-image:generateContent"
    )
    assert request.headers["authorization"] == "Bearer ya29.test-token"
    assert request.json()["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "2K"}
    assert provenance.effective == {"aspectRatio": "1:1", "n": 1, "api": "vertex", "imageSize": "2K"}


async def test_gemini_lists_its_models_without_the_prefix(sync_fake, http):
    provider = google.GoogleProvider.from_settings(settings_for(sync_fake.base_url), http)

    listed = await provider.list_models()

    assert "gemini-3.1-flash-image" in listed and "gemini-3-pro-image" in listed
    assert not any(name.startswith("models/") for name in listed)


async def test_google_429_reads_retry_info_from_the_body(sync_fake, http, sink):
    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        }
    }
    sync_fake.script.queue(GOOGLE_GENERATE_CONTENT, ("status", 429, body))

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(sync_fake, http, sink, "gemini")

    assert caught.value.retry_after == timedelta(seconds=37)
    assert "RESOURCE_EXHAUSTED" in caught.value.message


async def test_google_invalid_api_key_400_is_an_auth_rejection(sync_fake, http, sink):
    error = {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
    sync_fake.script.queue(GOOGLE_GENERATE_CONTENT, ("status", 400, {"error": error}))

    with pytest.raises(ProviderRejected) as caught:
        await generate(sync_fake, http, sink, "gemini")

    assert caught.value.type == AUTH


def check_gemini(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    assert request.headers["x-goog-api-key"] == GOOGLE_KEY
    assert request.json() == {
        "contents": [{"role": "user", "parts": [{"text": E2E_PROMPT}]}],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "1K"},
        },
    }


# This provider's jobs through the whole product, run by tests/test_providers_e2e.py.
E2E_CASES = [
    Case(
        "google",
        "gemini-3.1-flash-image",
        {"aspectRatio": "16:9"},
        "POST",
        "/v1beta/models/gemini-3.1-flash-image:generateContent",
        check_gemini,
    ),
]


def png(size: tuple[int, int] = (8, 8)) -> bytes:
    return image_bytes(size, "PNG")


def mock_google(answer: dict[str, Any], **settings: Any) -> tuple[GoogleProvider, list[httpx.Request]]:
    http, sent = mock_http(lambda request: httpx.Response(200, json=answer), input_image=png())
    values = {"GOOGLE_API_KEY": "k", "DOWNLOAD_ALLOWLIST": ["img.test"]} | settings
    return GoogleProvider.from_settings(Settings(_env_file=None, **values), http), sent


async def test_gemini_sends_the_previous_image_as_an_inline_part_beside_the_text() -> None:
    answer = {"candidates": [{"content": {"parts": [{"inlineData": {"mimeType": "image/png", "data": b64(png())}}]}}]}
    provider, sent = mock_google(answer)
    spec = PromptSpec(prompt="make it night", previous_image="http://img.test/a.png")
    call = ProviderCall("job-1", "canvas-1", "node-1", "google", "gemini-3.1-flash-image", spec)
    await provider.generate(call, CollectingSink(provider.http))
    (request,) = sent
    parts = json.loads(request.content)["contents"][0]["parts"]
    assert parts == [{"text": "make it night"}, {"inlineData": {"mimeType": "image/png", "data": b64(png())}}]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
