"""OpenAI Images: GPT image generations and edits, usage-priced cost, errors and limits, against the fake (which
answers shut-down models as OpenAI does now)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.config import Settings
from models.errors import InvalidJobRequest, ProviderUnavailable
from models.payloads import PromptSpec, ProviderCall
from providers.adapters import openai
from tests.fakes.base import form_fields, form_files, image_bytes
from tests.fakes.openai import OPENAI
from tests.fakes.server import RecordedRequest, mock_http, serve
from tests.fixtures.providers import E2E_PROMPT, OPENAI_KEY, Case
from tests.fixtures.sync_adapters import CollectingSink, call_for, generate, settings_for


async def test_openai_gpt_image_three_outputs_arrive_as_base64(sync_fake, http, sink):
    provider = openai.OpenAIProvider.from_settings(settings_for(sync_fake.base_url), http)
    call = call_for("gpt-image-2.5-flare", "openai", aspect_ratio="9:16", quality="standard", seed=5, n=3)

    provenance = await provider.generate(call, sink)

    [request] = sync_fake.recorder.requests
    assert request.json() == {
        "model": "gpt-image-2.5-flare",
        "prompt": "a lighthouse at dusk",
        "n": 3,
        "size": "1024x1536",
        "quality": "medium",
        "output_format": "png",
    }
    assert sink.ways == ["bytes", "bytes", "bytes"]
    assert provenance.effective == {"size": "1024x1536", "n": 3, "quality": "medium", "ignored": ["seed"]}
    # The fake's usage: 12 text tokens in ($5/1M), 3 x 1767 image tokens out ($30/1M).
    assert provenance.cost_usd == pytest.approx((12 * 5 + 3 * 1767 * 30) / 1_000_000)


async def test_openai_with_two_images_over_the_limit_is_refused_before_any_request(sync_fake, http, sink):
    provider = openai.OpenAIProvider.from_settings(settings_for(sync_fake.base_url), http)
    call = call_for("gpt-image-2.5-flare", "openai", n=11)

    with pytest.raises(InvalidJobRequest) as caught:
        provider.check_request(call.model, call.spec)
    assert caught.value.field == "n"
    assert sync_fake.recorder.requests == []


async def test_openai_lists_the_models_the_key_may_call(sync_fake, http):
    provider = openai.OpenAIProvider.from_settings(settings_for(sync_fake.base_url), http)

    listed = await provider.list_models()

    assert "gpt-image-2.5-flare" in listed and "gpt-image-2.5-flare-2026-09-08" in listed
    assert "dall-e-3" not in listed


async def test_openai_429_prefers_retry_after_ms(sync_fake, http, sink):
    body = {"error": {"message": "Rate limit reached for images per minute", "type": "requests", "code": None}}
    sync_fake.script.queue(OPENAI, ("status", 429, body, {"retry-after-ms": "1500", "retry-after": "2"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(sync_fake, http, sink, "openai")

    assert caught.value.retry_after == timedelta(milliseconds=1500)
    assert "Rate limit reached" in caught.value.message


async def test_openai_409_is_retryable(sync_fake, http, sink):
    sync_fake.script.queue(OPENAI, ("status", 409, {"error": {"message": "Conflict", "type": "server_error"}}))

    with pytest.raises(ProviderUnavailable):
        await generate(sync_fake, http, sink, "openai")


async def test_openai_with_a_previous_image_edits_it_sending_exactly_its_bytes(sync_fake, http, sink):
    source = image_bytes((64, 64))

    async def picture(request: Request) -> Response:
        return Response(source, media_type="image/png")

    async with serve(Starlette(routes=[Route("/sketch.png", picture)])) as images:
        settings = settings_for(sync_fake.base_url, DOWNLOAD_ALLOWLIST=["127.0.0.1"])
        provider = openai.OpenAIProvider.from_settings(settings, http)
        call = call_for("gpt-image-2.5-flare", "openai", previous_image=f"{images}/sketch.png", quality="high")
        provenance = await provider.generate(call, sink)

    [edit] = [request for request in sync_fake.recorder.requests if request.path == "/v1/images/edits"]
    assert form_files(edit)["image"].data == source
    assert form_files(edit)["image"].content_type == "image/png"
    assert form_fields(edit) == {
        "model": "gpt-image-2.5-flare",
        "prompt": "a lighthouse at dusk",
        "n": "1",
        "size": "1024x1024",
        "quality": "high",
        "output_format": "png",
    }
    assert sink.ways == ["bytes"] and provenance.effective["size"] == "1024x1024"
    assert not [request for request in sync_fake.recorder.requests if request.path == "/v1/images/generations"]


def check_gpt_image(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    body = request.json()
    # GPT image models always answer base64; response_format was DALL-E's (shut down 2026-05-12).
    assert "response_format" not in body
    assert body == {
        "model": "gpt-image-2.5-flare",
        "prompt": E2E_PROMPT,
        "n": 1,
        "size": "1024x1024",
        "quality": "high",
        "output_format": "png",
    }


# This provider's jobs through the whole product, run by tests/test_providers_e2e.py.
E2E_CASES = [
    Case(
        "openai",
        "gpt-image-2.5-flare",
        {"size": "1024x1024", "quality": "high"},
        "POST",
        "/v1/images/generations",
        check_gpt_image,
    ),
]


async def test_generations_request_mapping_on_a_mock_transport() -> None:
    http, sent = mock_http(lambda request: httpx.Response(200, json={"data": [{"b64_json": PNG_B64}]}))
    provider = openai.OpenAIProvider.from_settings(Settings(_env_file=None, OPENAI_API_KEY="sk-1"), http)
    spec = PromptSpec(prompt="a fox", size="1536x1024", quality="hd")
    await provider.generate(
        ProviderCall("job-1", "c", "n", "openai", "gpt-image-2.5-flare", spec), CollectingSink(http)
    )
    (request,) = sent
    assert (request.method, str(request.url)) == ("POST", "https://api.openai.com/v1/images/generations")
    assert request.headers["authorization"] == "Bearer sk-1"
    assert json.loads(request.content) == {
        "model": "gpt-image-2.5-flare",
        "prompt": "a fox",
        "n": 1,
        "size": "1536x1024",
        "quality": "high",
        "output_format": "png",
    }


PNG_B64 = base64.b64encode(image_bytes((4, 4), "PNG")).decode()
