"""Pollinations: seeds per output, the token, throttling, against the fake."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from core.config import Settings
from models.errors import (
    ProviderUnavailable,
)
from models.payloads import PromptSpec, ProviderCall
from providers.adapters import pollinations
from tests.fakes.base import image_bytes
from tests.fakes.pollinations import POLLINATIONS
from tests.fakes.server import RecordedRequest, mock_http
from tests.fixtures.providers import E2E_PROMPT, POLLINATIONS_TOKEN, Case
from tests.fixtures.sync_adapters import CollectingSink, call_for, generate, settings_for


async def test_pollinations_three_outputs_get_their_own_seeds_in_the_query(sync_fake, http, sink):
    provider = pollinations.PollinationsProvider.from_settings(settings_for(sync_fake.base_url), http)
    prompt = "a red fox / in snow & ice?"

    provenance = await provider.generate(
        call_for("flux", "pollinations", prompt=prompt, size="800x600", seed=7, n=3), sink
    )

    assert len(sync_fake.recorder.requests) == 3
    for index, request in enumerate(sync_fake.recorder.requests):
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


async def test_pollinations_sends_the_token_when_one_is_set(sync_fake, http, sink):
    provider = pollinations.PollinationsProvider.from_settings(
        settings_for(sync_fake.base_url, POLLINATIONS_TOKEN="pk-test"), http
    )

    provenance = await provider.generate(call_for("flux", "pollinations"), sink)

    assert sync_fake.recorder.requests[0].headers["authorization"] == "Bearer pk-test"
    assert 0 <= provenance.seed < 2**31


async def test_pollinations_429_honours_an_http_date(sync_fake, http, sink):
    when = datetime.now(UTC) + timedelta(seconds=30)
    sync_fake.script.queue(
        POLLINATIONS,
        ("status", 429, {"error": "Too many requests"}, {"retry-after": format_datetime(when, usegmt=True)}),
    )

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(sync_fake, http, sink, "pollinations")

    assert timedelta(seconds=25) < caught.value.retry_after <= timedelta(seconds=30)


async def test_pollinations_queue_full_402_is_retryable(sync_fake, http, sink):
    sync_fake.script.queue(POLLINATIONS, ("status", 402, {"x402Version": 1, "error": "Queue full for IP 203.0.113.9"}))

    with pytest.raises(ProviderUnavailable, match="Queue full"):
        await generate(sync_fake, http, sink, "pollinations")


def check_pollinations(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    assert request.headers["authorization"] == f"Bearer {POLLINATIONS_TOKEN}"
    assert request.path == f"/prompt/{E2E_PROMPT}"
    assert request.query["model"] == "flux"
    assert request.query["seed"] == "42"
    assert (request.query["width"], request.query["height"]) == ("640", "360")
    assert request.query["nologo"] == "true"
    assert record["effective"]["size"] == "640x360"


# This provider's jobs through the whole product, run by tests/test_providers_e2e.py.
E2E_CASES = [
    Case("pollinations", "flux", {"size": "640x360", "seed": 42}, "GET", "/prompt/", check_pollinations),
]


async def test_request_mapping_on_a_mock_transport() -> None:
    png = image_bytes((4, 4), "PNG")
    http, sent = mock_http(lambda request: httpx.Response(200, content=png, headers={"content-type": "image/png"}))
    provider = pollinations.PollinationsProvider.from_settings(Settings(_env_file=None), http)
    spec = PromptSpec(prompt="a fox & a hound", size="640x360", seed=9, n=2)
    await provider.generate(ProviderCall("job-1", "c", "n", "pollinations", "turbo", spec), CollectingSink(http))
    first, second = sent
    assert first.url.raw_path.split(b"?")[0] == b"/prompt/a%20fox%20%26%20a%20hound"
    assert "authorization" not in first.headers
    query = {"model": "turbo", "seed": "9", "width": "640", "height": "360", "nologo": "true", "enhance": "false"}
    assert dict(first.url.params) == query
    assert second.url.params["seed"] == "10"
