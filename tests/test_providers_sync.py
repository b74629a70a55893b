"""The synchronous adapters against fakes that answer like OpenAI, Google, Stability and Pollinations, over sockets.

Each success test checks the recorded request field by field against docs/providers.md; failure tests check
that every answer lands in the right error class with the provider's own reason and retry hint.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from PIL import Image, ImageStat
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.config import Settings
from models.errors import (
    AUTH,
    BAD_OUTPUT,
    CONTENT_POLICY,
    INVALID_REQUEST,
    InvalidJobRequest,
    ProviderRejected,
    ProviderUnavailable,
)
from models.payloads import PromptSpec, ProviderCall, StoredImage
from providers import google, local, openai, pollinations, stability
from providers.base import ImageProvider
from providers.http import classify_status, retry_after, retry_info_delay
from tests.fakes.script import Script
from tests.fakes.server import Recorder, free_port, serve
from tests.fakes.sync_providers import (
    GOOGLE_GENERATE_CONTENT,
    GOOGLE_PREDICT,
    OPENAI,
    POLLINATIONS,
    STABILITY_GENERATE,
    create_sync_fake,
    form_fields,
    form_files,
    image_bytes,
)

OPENAI_KEY = "sk-test-openai"
GOOGLE_KEY = "goog-test-key"
STABILITY_KEY = "sk-test-stability"


@dataclass
class Fake:
    base_url: str
    recorder: Recorder
    script: Script


@dataclass
class CollectingSink:
    """Keeps what the adapter hands over; URL answers are fetched so their bytes can be checked too."""

    http: httpx.AsyncClient
    received: list[tuple[str, bytes]] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)

    async def store_stream(self, chunks: AsyncIterable[bytes]) -> StoredImage:
        return self._keep("stream", b"".join([chunk async for chunk in chunks]))

    async def store_bytes(self, data: bytes) -> StoredImage:
        return self._keep("bytes", data)

    async def store_url(self, url: str) -> StoredImage:
        self.urls.append(url)
        response = await self.http.get(url)
        response.raise_for_status()
        return self._keep("url", response.content)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        self.fractions.append(fraction)

    def _keep(self, how: str, data: bytes) -> StoredImage:
        with Image.open(io.BytesIO(data)) as image:
            width, height, kind = image.width, image.height, (image.format or "").lower()
        self.received.append((how, data))
        key = f"test/{len(self.received)}.{kind}"
        return StoredImage(key, f"memory://{key}", f"image/{kind}", len(data), width, height)

    @property
    def ways(self) -> list[str]:
        return [how for how, _ in self.received]


@pytest.fixture(scope="module")
async def served() -> AsyncIterator[Fake]:
    recorder, script = Recorder(), Script()
    async with serve(create_sync_fake(recorder, script)) as base_url:
        yield Fake(base_url, recorder, script)


@pytest.fixture
def fake(served: Fake) -> Fake:
    served.recorder.clear()
    served.script.reset()
    return served


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def sink(http: httpx.AsyncClient) -> CollectingSink:
    return CollectingSink(http)


def settings_for(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": f"{base_url}/v1",
        "GOOGLE_API_KEY": GOOGLE_KEY,
        "GOOGLE_BASE_URL": base_url,
        "STABILITY_API_KEY": STABILITY_KEY,
        "STABILITY_BASE_URL": base_url,
        "POLLINATIONS_BASE_URL": base_url,
        "PROVIDER_TIMEOUT_SECONDS": 5.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


Factory = Callable[[Settings, httpx.AsyncClient | None], ImageProvider]

# name -> (factory, the fake's route, a model)
PROVIDERS: dict[str, tuple[Factory, str, str]] = {
    "openai": (openai.OpenAIProvider.from_settings, OPENAI, "gpt-image-1"),
    "imagen": (google.GoogleProvider.from_settings, GOOGLE_PREDICT, "imagen-4.0-generate-001"),
    "gemini": (google.GoogleProvider.from_settings, GOOGLE_GENERATE_CONTENT, "gemini-2.5-flash-image"),
    "stability": (stability.StabilityProvider.from_settings, STABILITY_GENERATE, "stable-image-core"),
    "pollinations": (pollinations.PollinationsProvider.from_settings, POLLINATIONS, "flux"),
}


def call_for(model: str, provider: str, **spec: Any) -> ProviderCall:
    spec.setdefault("prompt", "a lighthouse at dusk")
    return ProviderCall(
        job_id="job-1", canvas_id="canvas-1", node_id="node-1", provider=provider, model=model, spec=PromptSpec(**spec)
    )


async def generate(fake: Fake, http: httpx.AsyncClient, sink: CollectingSink, name: str, **spec: Any) -> Any:
    factory, _, model = PROVIDERS[name]
    provider = factory(settings_for(fake.base_url), http)
    return await provider.generate(call_for(spec.pop("model", model), provider.name, **spec), sink)


# Successes, request by request -----------------------------------------------------------------------------------


async def test_openai_dall_e_3_sends_the_documented_body_and_stores_the_url_answer(fake, http, sink):
    provider = openai.OpenAIProvider.from_settings(settings_for(fake.base_url), http)
    call = call_for("dall-e-3", "openai", size="1920x1080", quality="hd", style="vivid")

    provenance = await provider.generate(call, sink)

    [request] = fake.recorder.requests[:1]
    assert (request.method, request.path) == ("POST", "/v1/images/generations")
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "model": "dall-e-3",
        "prompt": "a lighthouse at dusk",
        "n": 1,
        "size": "1792x1024",
        "quality": "hd",
        "style": "vivid",
        "response_format": "url",
    }
    assert sink.ways == ["url"]
    assert sink.urls[0].startswith(f"{fake.base_url}/files/")
    assert provenance.revised_prompt == "A detailed illustration of a lighthouse at dusk"
    assert provenance.provider_job_id.startswith("req_")
    assert provenance.effective == {"size": "1792x1024", "n": 1, "quality": "hd", "style": "vivid"}


async def test_openai_gpt_image_three_outputs_arrive_as_base64(fake, http, sink):
    provider = openai.OpenAIProvider.from_settings(settings_for(fake.base_url), http)
    call = call_for("gpt-image-1", "openai", aspect_ratio="9:16", quality="standard", seed=5, n=3)

    provenance = await provider.generate(call, sink)

    [request] = fake.recorder.requests
    assert request.json() == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse at dusk",
        "n": 3,
        "size": "1024x1536",
        "quality": "medium",
        "output_format": "png",
    }
    assert sink.ways == ["bytes", "bytes", "bytes"]
    assert provenance.effective == {"size": "1024x1536", "n": 3, "quality": "medium", "ignored": ["seed"]}


async def test_openai_dall_e_2_asks_for_base64_when_configured(fake, http, sink):
    settings = settings_for(fake.base_url, OPENAI_RESPONSE_FORMAT="b64_json")
    provider = openai.OpenAIProvider.from_settings(settings, http)

    await provider.generate(call_for("dall-e-2", "openai", size="300x300", n=2), sink)

    assert fake.recorder.requests[0].json() == {
        "model": "dall-e-2",
        "prompt": "a lighthouse at dusk",
        "n": 2,
        "size": "256x256",
        "response_format": "b64_json",
    }
    assert sink.ways == ["bytes", "bytes"]


async def test_imagen_on_the_gemini_api_uses_the_key_header_and_predict_body(fake, http, sink):
    provider = google.GoogleProvider.from_settings(settings_for(fake.base_url), http)
    call = call_for("imagen-4.0-generate-001", "google", aspect_ratio="2:1", quality="high", negative_prompt="fog", n=2)

    provenance = await provider.generate(call, sink)

    [request] = fake.recorder.requests
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


async def test_imagen_stores_the_images_that_passed_and_reports_the_filtered_ones(fake, http, sink):
    png = base64.b64encode(image_bytes((64, 64))).decode()
    predictions = [{"bytesBase64Encoded": png, "mimeType": "image/png"}, {"raiFilteredReason": "filtered: violence"}]
    fake.script.queue(GOOGLE_PREDICT, ("status", 200, {"predictions": predictions}))

    provenance = await generate(fake, http, sink, "imagen", n=2)

    assert sink.ways == ["bytes"]
    assert provenance.effective["filtered"] == 1


async def test_imagen_on_vertex_uses_the_bearer_token_path_and_vertex_only_fields(fake, http, sink):
    settings = settings_for(
        fake.base_url,
        GOOGLE_VERTEX_PROJECT="proj-1",
        GOOGLE_VERTEX_LOCATION="europe-west4",
        GOOGLE_VERTEX_TOKEN="ya29.test-token",
        GOOGLE_VERTEX_BASE_URL=fake.base_url,
    )
    provider = google.GoogleProvider.from_settings(settings, http)
    call = call_for("imagen-3.0-generate-002", "google", size="768x1024", negative_prompt="blurry", seed=42)

    provenance = await provider.generate(call, sink)

    [request] = fake.recorder.requests
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


async def test_gemini_image_model_calls_generate_content_once_per_output(fake, http, sink):
    provider = google.GoogleProvider.from_settings(settings_for(fake.base_url), http)

    provenance = await provider.generate(call_for("gemini-2.5-flash-image", "google", size="2560x1080", n=2), sink)

    assert len(fake.recorder.requests) == 2
    for request in fake.recorder.requests:
        assert request.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
        assert request.headers["x-goog-api-key"] == GOOGLE_KEY
        assert request.json() == {
            "contents": [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "21:9"}},
        }
    assert sink.ways == ["bytes", "bytes"]
    assert sink.fractions == [0.5, 1.0]
    assert provenance.provider_job_id


async def test_stability_core_sends_multipart_fields_and_reads_the_seed_header(fake, http, sink):
    provider = stability.StabilityProvider.from_settings(settings_for(fake.base_url), http)
    call = call_for(
        "stable-image-core", "stability", size="1200x800", negative_prompt="blurry", seed=1234, style="Anime"
    )

    provenance = await provider.generate(call, sink)

    [request] = fake.recorder.requests
    assert (request.method, request.path) == ("POST", "/v2beta/stable-image/generate/core")
    assert request.headers["authorization"] == f"Bearer {STABILITY_KEY}"
    assert request.headers["accept"] == "image/*"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert form_fields(request) == {
        "prompt": "a lighthouse at dusk",
        "aspect_ratio": "3:2",
        "output_format": "png",
        "seed": "1234",
        "negative_prompt": "blurry",
        "style_preset": "anime",
    }
    assert sink.ways == ["stream"]
    assert provenance.seed == 1234
    assert provenance.effective == {"aspectRatio": "3:2", "n": 1, "style": "anime", "seeds": [1234]}


async def test_stability_sd3_three_outputs_take_three_calls_with_consecutive_seeds(fake, http, sink):
    provider = stability.StabilityProvider.from_settings(settings_for(fake.base_url), http)
    call = call_for("sd3.5-large-turbo", "stability", aspect_ratio="9:16", negative_prompt="fog", seed=10, n=3)

    provenance = await provider.generate(call, sink)

    assert [request.path for request in fake.recorder.requests] == ["/v2beta/stable-image/generate/sd3"] * 3
    fields = [form_fields(request) for request in fake.recorder.requests]
    assert [f["seed"] for f in fields] == ["10", "11", "12"]
    assert all(f["model"] == "sd3.5-large-turbo" and "negative_prompt" not in f for f in fields)
    assert sink.ways == ["stream"] * 3
    assert provenance.effective["seeds"] == [10, 11, 12]
    assert provenance.effective["ignored"] == ["negativePrompt"]


async def test_pollinations_three_outputs_get_their_own_seeds_in_the_query(fake, http, sink):
    provider = pollinations.PollinationsProvider.from_settings(settings_for(fake.base_url), http)
    prompt = "a red fox / in snow & ice?"

    provenance = await provider.generate(
        call_for("flux", "pollinations", prompt=prompt, size="800x600", seed=7, n=3), sink
    )

    assert len(fake.recorder.requests) == 3
    for index, request in enumerate(fake.recorder.requests):
        assert (request.method, request.path) == ("GET", f"/prompt/{prompt}")
        assert request.query == {
            "model": "flux",
            "seed": str(7 + index),
            "width": "800",
            "height": "600",
            "nologo": "true",
            "enhance": "false",
        }
        assert "authorization" not in request.headers
    assert sink.ways == ["stream"] * 3
    assert all(data.startswith(b"\xff\xd8") for _, data in sink.received)
    assert provenance.seed == 7


async def test_pollinations_sends_the_token_when_one_is_set(fake, http, sink):
    provider = pollinations.PollinationsProvider.from_settings(
        settings_for(fake.base_url, POLLINATIONS_TOKEN="pk-test"), http
    )

    provenance = await provider.generate(call_for("flux", "pollinations"), sink)

    assert fake.recorder.requests[0].headers["authorization"] == "Bearer pk-test"
    assert 0 <= provenance.seed < 2**31


# Retry hints and retryable failures ------------------------------------------------------------------------------


async def test_openai_429_prefers_retry_after_ms(fake, http, sink):
    body = {"error": {"message": "Rate limit reached for images per minute", "type": "requests", "code": None}}
    fake.script.queue(OPENAI, ("status", 429, body, {"retry-after-ms": "1500", "retry-after": "2"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(fake, http, sink, "openai")

    assert caught.value.retry_after == timedelta(milliseconds=1500)
    assert "Rate limit reached" in caught.value.message


async def test_stability_429_honours_retry_after_seconds(fake, http, sink):
    body = {"id": "e1", "name": "rate_limit_exceeded", "errors": ["You have exceeded the rate limit"]}
    fake.script.queue(STABILITY_GENERATE, ("status", 429, body, {"retry-after": "7"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(fake, http, sink, "stability")

    assert caught.value.retry_after == timedelta(seconds=7)


async def test_pollinations_429_honours_an_http_date(fake, http, sink):
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake.script.queue(
        POLLINATIONS,
        ("status", 429, {"error": "Too many requests"}, {"retry-after": format_datetime(when, usegmt=True)}),
    )

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(fake, http, sink, "pollinations")

    assert timedelta(seconds=25) < caught.value.retry_after <= timedelta(seconds=30)


async def test_google_429_reads_retry_info_from_the_body(fake, http, sink):
    body = {
        "error": {
            "code": 429,
            "message": "Resource has been exhausted (e.g. check quota).",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        }
    }
    fake.script.queue(GOOGLE_PREDICT, ("status", 429, body))

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(fake, http, sink, "imagen")

    assert caught.value.retry_after == timedelta(seconds=37)
    assert "RESOURCE_EXHAUSTED" in caught.value.message


async def test_pollinations_queue_full_402_is_retryable(fake, http, sink):
    fake.script.queue(POLLINATIONS, ("status", 402, {"x402Version": 1, "error": "Queue full for IP 203.0.113.9"}))

    with pytest.raises(ProviderUnavailable, match="Queue full"):
        await generate(fake, http, sink, "pollinations")


async def test_openai_409_is_retryable(fake, http, sink):
    fake.script.queue(OPENAI, ("status", 409, {"error": {"message": "Conflict", "type": "server_error"}}))

    with pytest.raises(ProviderUnavailable):
        await generate(fake, http, sink, "openai")


@pytest.mark.parametrize("name", list(PROVIDERS))
@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(fake, http, sink, name, status):
    fake.script.queue(PROVIDERS[name][1], ("status", status, "upstream overloaded"))

    with pytest.raises(ProviderUnavailable, match=f"HTTP {status}: upstream overloaded"):
        await generate(fake, http, sink, name)

    assert sink.received == []


@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_a_slow_answer_times_out_as_retryable(fake, http, sink, name):
    factory, route, model = PROVIDERS[name]
    fake.script.queue(route, "slow")
    provider = factory(settings_for(fake.base_url, PROVIDER_TIMEOUT_SECONDS=0.3), http)

    with pytest.raises(ProviderUnavailable, match="did not answer in time"):
        await provider.generate(call_for(model, provider.name), sink)


async def test_a_refused_connection_is_retryable(http, sink):
    provider = stability.StabilityProvider.from_settings(settings_for(f"http://127.0.0.1:{free_port()}"), http)

    with pytest.raises(ProviderUnavailable, match="Could not reach Stability"):
        await provider.generate(call_for("stable-image-core", "stability"), sink)


# Refusals --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model", "behaviour", "reason"),
    [
        ("openai", "dall-e-3", "moderation", "(content_policy_violation): Your request was rejected"),
        ("openai", "gpt-image-1", "moderation", "(moderation_blocked; categories: sexual; stage: output)"),
        ("imagen", None, "moderation", "violate Google's Responsible AI practices"),
        ("imagen", None, "all_filtered", "violated Vertex AI's usage guidelines"),
        ("gemini", None, "moderation", "blockReason PROHIBITED_CONTENT"),
        ("gemini", None, "all_filtered", "finishReason IMAGE_SAFETY"),
        ("stability", None, "moderation", "(content_moderation): Your request was flagged"),
        ("stability", None, "all_filtered", "finish-reason CONTENT_FILTERED"),
    ],
)
async def test_moderation_is_a_content_policy_rejection_with_the_providers_reason(
    fake, http, sink, name, model, behaviour, reason
):
    factory, route, default_model = PROVIDERS[name]
    fake.script.queue(route, behaviour)
    provider = factory(settings_for(fake.base_url), http)

    with pytest.raises(ProviderRejected) as caught:
        await provider.generate(call_for(model or default_model, provider.name), sink)

    assert caught.value.type == CONTENT_POLICY
    assert not caught.value.retryable
    assert reason in caught.value.message
    assert caught.value.message.endswith("Rephrase the prompt.")
    assert len(fake.recorder.requests) == 1
    assert sink.received == []


UNAUTHORIZED = {
    "openai": {"error": {"message": "Incorrect API key provided: sk-test.", "type": "invalid_request_error"}},
    "imagen": {"error": {"code": 401, "message": "Request had invalid credentials.", "status": "UNAUTHENTICATED"}},
    "gemini": {"error": {"code": 401, "message": "Request had invalid credentials.", "status": "UNAUTHENTICATED"}},
    "stability": {"id": "e2", "name": "unauthorized", "errors": ["authorization: invalid api key"]},
    "pollinations": {"error": "Invalid token"},
}
KEY_SETTINGS = {
    "openai": "OPENAI_API_KEY",
    "imagen": "GOOGLE_API_KEY",
    "gemini": "GOOGLE_API_KEY",
    "stability": "STABILITY_API_KEY",
    "pollinations": "POLLINATIONS_TOKEN",
}


@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_401_is_an_auth_rejection_naming_the_key_setting(fake, http, sink, name):
    fake.script.queue(PROVIDERS[name][1], ("status", 401, UNAUTHORIZED[name]))

    with pytest.raises(ProviderRejected) as caught:
        await generate(fake, http, sink, name)

    assert caught.value.type == AUTH
    assert KEY_SETTINGS[name] in caught.value.message


async def test_google_invalid_api_key_400_is_an_auth_rejection(fake, http, sink):
    error = {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
    fake.script.queue(GOOGLE_PREDICT, ("status", 400, {"error": error}))

    with pytest.raises(ProviderRejected) as caught:
        await generate(fake, http, sink, "imagen")

    assert caught.value.type == AUTH


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_client_errors_are_invalid_request_rejections(fake, http, sink, status):
    body = {"id": "e3", "name": "bad_request", "errors": ["aspect_ratio: invalid"]}
    fake.script.queue(STABILITY_GENERATE, ("status", status, body))

    with pytest.raises(ProviderRejected, match="bad_request: aspect_ratio: invalid") as caught:
        await generate(fake, http, sink, "stability")

    assert caught.value.type == INVALID_REQUEST


async def test_an_html_page_instead_of_an_image_is_refused_before_storing(fake, http, sink):
    fake.script.queue(POLLINATIONS, "html")

    with pytest.raises(ProviderRejected, match="text/html") as caught:
        await generate(fake, http, sink, "pollinations")

    assert caught.value.type == BAD_OUTPUT
    assert sink.received == []


async def test_an_html_page_instead_of_json_is_refused(fake, http, sink):
    fake.script.queue(OPENAI, "html")

    with pytest.raises(ProviderRejected, match="instead of JSON") as caught:
        await generate(fake, http, sink, "openai")

    assert caught.value.type == BAD_OUTPUT


async def test_an_oversized_base64_answer_is_refused_unread(fake, http, sink):
    fake.script.queue(OPENAI, "oversized")
    provider = openai.OpenAIProvider.from_settings(settings_for(fake.base_url, MAX_IMAGE_BYTES=100_000), http)

    with pytest.raises(ProviderRejected, match="larger than") as caught:
        await provider.generate(call_for("gpt-image-1", "openai"), sink)

    assert caught.value.type == BAD_OUTPUT
    assert sink.received == []


# Checks before any call ------------------------------------------------------------------------------------------


async def test_dall_e_3_with_two_images_is_refused_before_any_request(fake, http, sink):
    provider = openai.OpenAIProvider.from_settings(settings_for(fake.base_url), http)
    call = call_for("dall-e-3", "openai", n=2)

    with pytest.raises(InvalidJobRequest) as caught:
        provider.check_request(call.model, call.spec)
    assert caught.value.field == "n"
    with pytest.raises(InvalidJobRequest):
        await provider.generate(call, sink)

    assert fake.recorder.requests == []


@pytest.mark.parametrize(
    ("factory", "model", "spec", "field_name"),
    [
        (openai.OpenAIProvider.from_settings, "dall-e-4", {}, "model"),
        (openai.OpenAIProvider.from_settings, "dall-e-2", {"prompt": "x" * 1001}, "prompt"),
        (openai.OpenAIProvider.from_settings, "dall-e-3", {"prompt": "x" * 4001}, "prompt"),
        (openai.OpenAIProvider.from_settings, "gpt-image-1", {"prompt": "x" * 32001}, "prompt"),
        (openai.OpenAIProvider.from_settings, "gpt-image-1", {"n": 11}, "n"),
        (openai.OpenAIProvider.from_settings, "dall-e-3", {"style": "anime"}, "style"),
        (openai.OpenAIProvider.from_settings, "gpt-image-1", {"quality": "ultra"}, "quality"),
        (google.GoogleProvider.from_settings, "imagen-4.0-generate-001", {"n": 5}, "n"),
        (google.GoogleProvider.from_settings, "imagen-4.0-ultra-generate-001", {"n": 2}, "n"),
        (stability.StabilityProvider.from_settings, "stable-image-ultra", {"prompt": "x" * 10001}, "prompt"),
        (stability.StabilityProvider.from_settings, "stable-image-core", {"seed": 4294967294, "n": 2}, "seed"),
        (stability.StabilityProvider.from_settings, "stable-image-core", {"seed": -1}, "seed"),
        (stability.StabilityProvider.from_settings, "stable-image-core", {"style": "watercolour"}, "style"),
        (pollinations.PollinationsProvider.from_settings, "flux", {"prompt": "  "}, "prompt"),
    ],
)
def test_what_a_model_cannot_do_is_an_invalid_job_request(factory, model, spec, field_name):
    provider = factory(settings_for("http://127.0.0.1:9"), None)
    spec.setdefault("prompt", "a lighthouse")

    with pytest.raises(InvalidJobRequest) as caught:
        provider.check_request(model, PromptSpec(**spec))

    assert caught.value.field == field_name


def test_an_unknown_model_error_names_the_allowed_models():
    provider = stability.StabilityProvider.from_settings(settings_for("http://127.0.0.1:9"), None)

    with pytest.raises(InvalidJobRequest, match="stable-image-ultra, stable-image-core, sd3.5-large"):
        provider.check_request("sdxl", PromptSpec(prompt="a lighthouse"))


@pytest.mark.parametrize(
    ("factory", "model", "spec", "key", "expected"),
    [
        (openai.OpenAIProvider.from_settings, "dall-e-3", {"aspect_ratio": "16:9"}, "size", "1792x1024"),
        (openai.OpenAIProvider.from_settings, "dall-e-3", {"aspect_ratio": "1:2"}, "size", "1024x1792"),
        (openai.OpenAIProvider.from_settings, "gpt-image-1", {"size": "1600x1200"}, "size", "1536x1024"),
        (openai.OpenAIProvider.from_settings, "dall-e-2", {"size": "600x500"}, "size", "512x512"),
        (google.GoogleProvider.from_settings, "imagen-4.0-generate-001", {"aspect_ratio": "5:4"}, "aspectRatio", "4:3"),
        (google.GoogleProvider.from_settings, "imagen-4.0-generate-001", {"size": "1080x1920"}, "aspectRatio", "9:16"),
        (google.GoogleProvider.from_settings, "gemini-2.5-flash-image", {"aspect_ratio": "5:4"}, "aspectRatio", "5:4"),
        (
            stability.StabilityProvider.from_settings,
            "stable-image-ultra",
            {"aspect_ratio": "12:5"},
            "aspectRatio",
            "21:9",
        ),
        (stability.StabilityProvider.from_settings, "stable-image-ultra", {"size": "1000x1900"}, "aspectRatio", "9:16"),
        (pollinations.PollinationsProvider.from_settings, "flux", {"aspect_ratio": "16:9"}, "size", "1024x576"),
    ],
)
def test_the_nearest_allowed_size_is_reported(factory, model, spec, key, expected):
    provider = factory(settings_for("http://127.0.0.1:9"), None)

    effective = provider.check_request(model, PromptSpec(prompt="a lighthouse", **spec))

    assert effective[key] == expected


def test_providers_without_their_key_are_disabled_and_say_why():
    settings = Settings(_env_file=None, OPENAI_API_KEY=None, GOOGLE_API_KEY=None, STABILITY_API_KEY=None)

    assert openai.OpenAIProvider.from_settings(settings, None).disabled_reason() == "OPENAI_API_KEY is not set"
    assert google.GoogleProvider.from_settings(settings, None).disabled_reason().startswith("GOOGLE_API_KEY is not set")
    assert stability.StabilityProvider.from_settings(settings, None).disabled_reason() == "STABILITY_API_KEY is not set"
    assert pollinations.PollinationsProvider.from_settings(settings, None).disabled_reason() is None
    no_pollinations = settings.model_copy(update={"POLLINATIONS_ENABLED": False})
    assert (
        pollinations.PollinationsProvider.from_settings(no_pollinations, None).disabled_reason()
        == "POLLINATIONS_ENABLED is false"
    )
    vertex = settings.model_copy(update={"GOOGLE_VERTEX_PROJECT": "p", "GOOGLE_VERTEX_TOKEN": "t"})
    assert google.GoogleProvider.from_settings(vertex, None).disabled_reason() is None


def test_rate_limits_come_from_settings():
    settings = settings_for("http://127.0.0.1:9", OPENAI_RATE_PER_MINUTE=7, GOOGLE_RATE_PER_MINUTE=8)

    assert openai.OpenAIProvider.from_settings(settings, None).rate_limit_per_minute() == 7
    assert google.GoogleProvider.from_settings(settings, None).rate_limit_per_minute() == 8
    assert (
        stability.StabilityProvider.from_settings(settings, None).info().rate_limit_per_minute
        == settings.STABILITY_RATE_PER_MINUTE
    )


# The shared helpers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250", "retry-after": "9"}, timedelta(milliseconds=250)),
        ({"retry-after": "12"}, timedelta(seconds=12)),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, timedelta(seconds=30)),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, timedelta(0)),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "-5"}, None),
        ({}, None),
    ],
)
def test_retry_after_reads_every_header_form(headers, expected):
    now = datetime(2015, 10, 21, 7, 28, tzinfo=UTC)

    assert retry_after(httpx.Headers(headers), now=now) == expected


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        ("37s", timedelta(seconds=37)),
        ("1.5s", timedelta(seconds=1.5)),
        ({"seconds": "3", "nanos": 5e8}, timedelta(seconds=3.5)),
    ],
)
def test_retry_info_delay_reads_protobuf_durations(delay, expected):
    body = {"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}}

    assert retry_info_delay(body) == expected
    assert retry_info_delay({"error": {"details": []}}) is None


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [
        (408, ProviderUnavailable, "ProviderUnavailable"),
        (429, ProviderUnavailable, "ProviderUnavailable"),
        (502, ProviderUnavailable, "ProviderUnavailable"),
        (401, ProviderRejected, AUTH),
        (403, ProviderRejected, AUTH),
        (400, ProviderRejected, INVALID_REQUEST),
        (422, ProviderRejected, INVALID_REQUEST),
    ],
)
def test_classify_status(status, kind, error_type):
    error = classify_status("Acme", status, "nope", key_setting="ACME_KEY")

    assert type(error) is kind
    assert error.type == error_type
    assert error.message.startswith(f"Acme answered HTTP {status}: nope")


def test_the_local_provider_refines_its_input_visibly() -> None:
    # A refinement keeps its input's look (re-tinted, overlaid), so a chain of refinements is visibly a chain.
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (230, 20, 20)).save(buffer, format="PNG")
    red = buffer.getvalue()
    fresh = Image.open(io.BytesIO(local.render_png("a barn", 7, 64, 64)))
    refined = Image.open(io.BytesIO(local.render_png("a barn", 7, 64, 64, start_from=red)))

    def mean(image: Image.Image, band: int) -> float:
        return float(ImageStat.Stat(image).mean[band])

    assert refined.size == (64, 64)
    assert mean(refined, 0) > mean(refined, 2) + 40  # still mostly red
    assert refined.tobytes() != fresh.tobytes()
    assert local.render_png("a barn", 7, 64, 64, start_from=red) == local.render_png(
        "a barn", 7, 64, 64, start_from=red
    )


async def test_openai_with_a_previous_image_edits_it_sending_exactly_its_bytes(fake, http, sink):
    source = image_bytes((64, 64))

    async def picture(request: Request) -> Response:
        return Response(source, media_type="image/png")

    async with serve(Starlette(routes=[Route("/sketch.png", picture)])) as images:
        settings = settings_for(fake.base_url, DOWNLOAD_ALLOWLIST=["127.0.0.1"])
        provider = openai.OpenAIProvider.from_settings(settings, http)
        call = call_for("gpt-image-1", "openai", previous_image=f"{images}/sketch.png", quality="high")
        provenance = await provider.generate(call, sink)

    [edit] = [request for request in fake.recorder.requests if request.path == "/v1/images/edits"]
    assert form_files(edit)["image"].data == source
    assert form_files(edit)["image"].content_type == "image/png"
    assert form_fields(edit) == {
        "model": "gpt-image-1",
        "prompt": "a lighthouse at dusk",
        "n": "1",
        "size": "1024x1024",
        "quality": "high",
        "output_format": "png",
    }
    assert sink.ways == ["bytes"] and provenance.effective["size"] == "1024x1024"
    assert not [request for request in fake.recorder.requests if request.path == "/v1/images/generations"]


def test_dall_e_3_refuses_a_previous_image_naming_the_models_that_can() -> None:
    provider = openai.OpenAIProvider.from_settings(settings_for("http://unused.test"), None)
    with pytest.raises(InvalidJobRequest) as refused:
        provider.check_request("dall-e-3", PromptSpec(prompt="x", previous_image="https://x.test/a.png"))
    assert refused.value.field == "previousImage"
    assert "dall-e-2" in refused.value.message and "gpt-image-1" in refused.value.message
