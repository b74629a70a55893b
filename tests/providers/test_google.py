"""Google: Imagen on the Gemini API and Vertex AI, Gemini image models, their errors, against the fake."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from core.config import Settings
from models.errors import (
    AUTH,
    InvalidJobRequest,
    ProviderRejected,
    ProviderUnavailable,
)
from models.payloads import PromptSpec, ProviderCall
from providers import google
from providers.google import GoogleProvider
from tests.fakes.base import image_bytes
from tests.fakes.google import GOOGLE_PREDICT
from tests.fakes.server import RecordedRequest, mock_http
from tests.fixtures.providers import E2E_PROMPT, GOOGLE_KEY, Case
from tests.fixtures.sync_adapters import CollectingSink, call_for, generate, settings_for


async def test_imagen_on_the_gemini_api_uses_the_key_header_and_predict_body(sync_fake, http, sink):
    provider = google.GoogleProvider.from_settings(settings_for(sync_fake.base_url), http)
    call = call_for("imagen-4.0-generate-001", "google", aspect_ratio="2:1", quality="high", negative_prompt="fog", n=2)

    provenance = await provider.generate(call, sink)

    [request] = sync_fake.recorder.requests
    assert request.path == "/v1beta/models/imagen-4.0-generate-001:predict"
    assert request.headers["x-goog-api-key"] == GOOGLE_KEY
    assert "authorization" not in request.headers
    assert request.json() == {
        "instances": [{"prompt": "a lighthouse at dusk"}],
        "parameters": {"sampleCount": 2, "aspectRatio": "16:9", "includeRaiReason": True, "sampleImageSize": "2K"},
    }
    assert sink.ways == ["bytes", "bytes"]
    assert provenance.effective["ignored"] == ["negativePrompt"]
    assert provenance.effective["api"] == "gemini"


async def test_imagen_stores_the_images_that_passed_and_reports_the_filtered_ones(sync_fake, http, sink):
    png = base64.b64encode(image_bytes((64, 64))).decode()
    predictions = [{"bytesBase64Encoded": png, "mimeType": "image/png"}, {"raiFilteredReason": "filtered: violence"}]
    sync_fake.script.queue(GOOGLE_PREDICT, ("status", 200, {"predictions": predictions}))

    provenance = await generate(sync_fake, http, sink, "imagen", n=2)

    assert sink.ways == ["bytes"]
    assert provenance.effective["filtered"] == 1


async def test_imagen_on_vertex_uses_the_bearer_token_path_and_vertex_only_fields(sync_fake, http, sink):
    settings = settings_for(
        sync_fake.base_url,
        GOOGLE_VERTEX_PROJECT="proj-1",
        GOOGLE_VERTEX_LOCATION="europe-west4",
        GOOGLE_VERTEX_TOKEN="ya29.test-token",
        GOOGLE_VERTEX_BASE_URL=sync_fake.base_url,
    )
    provider = google.GoogleProvider.from_settings(settings, http)
    call = call_for("imagen-3.0-generate-002", "google", size="768x1024", negative_prompt="blurry", seed=42)

    provenance = await provider.generate(call, sink)

    [request] = sync_fake.recorder.requests
    assert request.path == (
        "/v1/projects/proj-1/locations/europe-west4/publishers/google/models/imagen-3.0-generate-002:predict"
    )
    assert request.headers["authorization"] == "Bearer ya29.test-token"
    assert "x-goog-api-key" not in request.headers
    assert request.json() == {
        "instances": [{"prompt": "a lighthouse at dusk"}],
        "parameters": {
            "sampleCount": 1,
            "aspectRatio": "3:4",
            "includeRaiReason": True,
            "negativePrompt": "blurry",
            "seed": 42,
            "addWatermark": False,
        },
    }
    assert sink.ways == ["bytes"]
    assert provenance.effective == {"aspectRatio": "3:4", "n": 1, "api": "vertex", "seed": 42}


async def test_gemini_image_model_calls_generate_content_once_per_output(sync_fake, http, sink):
    provider = google.GoogleProvider.from_settings(settings_for(sync_fake.base_url), http)

    provenance = await provider.generate(call_for("gemini-2.5-flash-image", "google", size="2560x1080", n=2), sink)

    assert len(sync_fake.recorder.requests) == 2
    for request in sync_fake.recorder.requests:
        assert request.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
        assert request.headers["x-goog-api-key"] == GOOGLE_KEY
        assert request.json() == {
            "contents": [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "21:9"}},
        }
    assert sink.ways == ["bytes", "bytes"]
    assert sink.fractions == [0.5, 1.0]
    assert provenance.provider_job_id


async def test_google_429_reads_retry_info_from_the_body(sync_fake, http, sink):
    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        }
    }
    sync_fake.script.queue(GOOGLE_PREDICT, ("status", 429, body))

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(sync_fake, http, sink, "imagen")

    assert caught.value.retry_after == timedelta(seconds=37)
    assert "RESOURCE_EXHAUSTED" in caught.value.message


async def test_google_invalid_api_key_400_is_an_auth_rejection(sync_fake, http, sink):
    error = {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
    sync_fake.script.queue(GOOGLE_PREDICT, ("status", 400, {"error": error}))

    with pytest.raises(ProviderRejected) as caught:
        await generate(sync_fake, http, sink, "imagen")

    assert caught.value.type == AUTH


# Request fields PROVIDERS.md documents, per provider endpoint: anything else sent is a mapping bug.
IMAGEN_GEMINI_API_PARAMETERS = {
    "sampleCount",
    "aspectRatio",
    "personGeneration",
    "safetySetting",
    "includeRaiReason",
    "outputOptions",
    "sampleImageSize",
    "guidanceScale",
}


def check_imagen(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    assert request.headers["x-goog-api-key"] == GOOGLE_KEY
    assert "authorization" not in request.headers
    body = request.json()
    assert body["instances"] == [{"prompt": E2E_PROMPT}]
    parameters = body["parameters"]
    assert set(parameters) <= IMAGEN_GEMINI_API_PARAMETERS, "Vertex-only fields sent to the Gemini API"
    assert parameters["sampleCount"] == 1
    assert parameters["aspectRatio"] == "16:9"


def check_gemini(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    assert request.headers["x-goog-api-key"] == GOOGLE_KEY
    assert request.json() == {
        "contents": [{"role": "user", "parts": [{"text": E2E_PROMPT}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "16:9"}},
    }


# This provider's jobs through the whole product, run by tests/test_providers_e2e.py.
E2E_CASES = [
    Case(
        "google",
        "imagen-4.0-generate-001",
        {"aspectRatio": "16:9"},
        "POST",
        "/v1beta/models/imagen-4.0-generate-001:predict",
        check_imagen,
    ),
    Case(
        "google",
        "gemini-2.5-flash-image",
        {"aspectRatio": "16:9"},
        "POST",
        "/v1beta/models/gemini-2.5-flash-image:generateContent",
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
    call = ProviderCall("job-1", "canvas-1", "node-1", "google", "gemini-2.5-flash-image", spec)
    await provider.generate(call, CollectingSink(provider.http))
    (request,) = sent
    parts = json.loads(request.content)["contents"][0]["parts"]
    assert parts == [{"text": "make it night"}, {"inlineData": {"mimeType": "image/png", "data": b64(png())}}]


async def test_imagen_edit_goes_to_vertex_with_the_image_as_a_raw_reference() -> None:
    provider, sent = mock_google(
        {"predictions": [{"bytesBase64Encoded": b64(png())}]},
        GOOGLE_API_KEY=None,
        GOOGLE_VERTEX_PROJECT="p1",
        GOOGLE_VERTEX_TOKEN="t1",
        GOOGLE_VERTEX_BASE_URL="https://vertex.test",
    )
    spec = PromptSpec(prompt="add a moon", previous_image="http://img.test/a.png")
    call = ProviderCall("job-1", "canvas-1", "node-1", "google", "imagen-3.0-capability-001", spec)
    await provider.generate(call, CollectingSink(provider.http))
    (request,) = sent
    assert request.url.path.endswith("/models/imagen-3.0-capability-001:predict")
    assert request.headers["authorization"] == "Bearer t1"
    body = json.loads(request.content)
    assert body["instances"] == [
        {
            "prompt": "add a moon",
            "referenceImages": [
                {
                    "referenceType": "REFERENCE_TYPE_RAW",
                    "referenceId": 1,
                    "referenceImage": {"bytesBase64Encoded": b64(png())},
                }
            ],
        }
    ]
    assert body["parameters"]["editMode"] == "EDIT_MODE_DEFAULT" and "aspectRatio" not in body["parameters"]


def test_imagen_edit_without_vertex_is_refused_naming_what_to_set() -> None:
    provider = GoogleProvider.from_settings(Settings(_env_file=None, GOOGLE_API_KEY="k"), None)
    spec = PromptSpec(prompt="x", previous_image="http://img.test/a.png")
    with pytest.raises(InvalidJobRequest) as refused:
        provider.check_request("imagen-3.0-capability-001", spec)
    assert refused.value.field == "model" and "GOOGLE_VERTEX_PROJECT" in refused.value.message


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
