"""What every adapter shares: retry hints, status classes, key and size checks, input-image refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from core.config import Settings
from models.errors import (
    AUTH,
    BAD_OUTPUT,
    CONTENT_POLICY,
    INVALID_REQUEST,
    InvalidJobRequest,
    ModelUnavailable,
    ProviderRejected,
    ProviderUnavailable,
)
from models.payloads import PromptSpec
from providers.adapters import google, midjourney, openai, pollinations, replicate, stability
from providers.adapters.midjourney import MidjourneyProvider
from providers.adapters.replicate import ReplicateProvider
from providers.classify import classify_status, retry_after, retry_info_delay
from tests.fakes.app import FakeProviders
from tests.fakes.midjourney import MIDJOURNEY_IMAGINE
from tests.fakes.openai import OPENAI
from tests.fakes.pollinations import POLLINATIONS
from tests.fakes.replicate import REPLICATE_CREATE
from tests.fakes.server import free_port
from tests.fakes.stability import (
    STABILITY_GENERATE,
)
from tests.fixtures.async_adapters import AsyncFake, call, poll_until_terminal
from tests.fixtures.stability_adapter import UPSCALE_PROMPT, all_providers
from tests.fixtures.stack import running_stack
from tests.fixtures.sync_adapters import KEY_SETTINGS, PROVIDERS, UNAUTHORIZED, call_for, generate, settings_for


@pytest.mark.parametrize("name", list(PROVIDERS))
@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(sync_fake, http, sink, name, status):
    sync_fake.script.queue(PROVIDERS[name][1], ("status", status, "upstream overloaded"))

    with pytest.raises(ProviderUnavailable, match=f"HTTP {status}: upstream overloaded"):
        await generate(sync_fake, http, sink, name)

    assert sink.received == []


@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_a_slow_answer_times_out_as_retryable(sync_fake, http, sink, name):
    factory, route, model = PROVIDERS[name]
    sync_fake.script.queue(route, "slow")
    provider = factory(settings_for(sync_fake.base_url, PROVIDER_TIMEOUT_SECONDS=0.3), http)

    with pytest.raises(ProviderUnavailable, match="did not answer in time"):
        await provider.generate(call_for(model, provider.name), sink)


async def test_a_refused_connection_is_retryable_and_said_in_words(http, sink):
    provider = stability.StabilityProvider.from_settings(settings_for(f"http://127.0.0.1:{free_port()}"), http)

    with pytest.raises(ProviderUnavailable) as raised:
        await provider.generate(call_for("stable-image-core", "stability"), sink)
    # A sentence for people; the exception's own text (ConnectError, errno) is the logs' business.
    assert raised.value.message == "Could not reach Stability: the connection was refused; check that the server is up."


async def test_a_name_that_does_not_resolve_is_said_in_words(http, sink):
    provider = stability.StabilityProvider.from_settings(settings_for("http://no-such-host.invalid"), http)

    with pytest.raises(ProviderUnavailable) as raised:
        await provider.generate(call_for("stable-image-core", "stability"), sink)
    assert (
        raised.value.message == "Could not reach Stability: its name does not resolve; check the URL and the network."
    )


@pytest.mark.parametrize(
    ("name", "model", "behaviour", "reason"),
    [
        ("openai", None, "moderation", "(moderation_blocked; categories: sexual; stage: output)"),
        ("gemini", None, "moderation", "blockReason PROHIBITED_CONTENT"),
        ("gemini", None, "all_filtered", "finishReason IMAGE_SAFETY"),
        ("stability", None, "moderation", "(content_moderation): Your request was flagged"),
        ("stability", None, "all_filtered", "finish-reason CONTENT_FILTERED"),
    ],
)
async def test_moderation_is_a_content_policy_rejection_with_the_providers_reason(
    sync_fake, http, sink, name, model, behaviour, reason
):
    factory, route, default_model = PROVIDERS[name]
    sync_fake.script.queue(route, behaviour)
    provider = factory(settings_for(sync_fake.base_url), http)

    with pytest.raises(ProviderRejected) as caught:
        await provider.generate(call_for(model or default_model, provider.name), sink)

    assert caught.value.type == CONTENT_POLICY
    assert not caught.value.retryable
    assert reason in caught.value.message
    assert caught.value.message.endswith("Rephrase the prompt.")
    assert len(sync_fake.recorder.requests) == 1
    assert sink.received == []


@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_401_is_an_auth_rejection_naming_the_key_setting(sync_fake, http, sink, name):
    sync_fake.script.queue(PROVIDERS[name][1], ("status", 401, UNAUTHORIZED[name]))

    with pytest.raises(ProviderRejected) as caught:
        await generate(sync_fake, http, sink, name)

    assert caught.value.type == AUTH
    assert KEY_SETTINGS[name] in caught.value.message


@pytest.mark.parametrize("status", [400, 404, 413, 422])
async def test_client_errors_are_invalid_request_rejections(sync_fake, http, sink, status):
    body = {"id": "e3", "name": "bad_request", "errors": ["aspect_ratio: invalid"]}
    sync_fake.script.queue(STABILITY_GENERATE, ("status", status, body))

    with pytest.raises(ProviderRejected, match="bad_request: aspect_ratio: invalid") as caught:
        await generate(sync_fake, http, sink, "stability")

    assert caught.value.type == INVALID_REQUEST


async def test_an_html_page_instead_of_an_image_is_refused_before_storing(sync_fake, http, sink):
    sync_fake.script.queue(POLLINATIONS, "html")

    with pytest.raises(ProviderRejected, match="text/html") as caught:
        await generate(sync_fake, http, sink, "pollinations")

    assert caught.value.type == BAD_OUTPUT
    assert sink.received == []


async def test_an_html_page_instead_of_json_is_refused(sync_fake, http, sink):
    sync_fake.script.queue(OPENAI, "html")

    with pytest.raises(ProviderRejected, match="instead of JSON") as caught:
        await generate(sync_fake, http, sink, "openai")

    assert caught.value.type == BAD_OUTPUT


async def test_an_oversized_base64_answer_is_refused_unread(sync_fake, http, sink):
    sync_fake.script.queue(OPENAI, "oversized")
    provider = openai.OpenAIProvider.from_settings(settings_for(sync_fake.base_url, MAX_IMAGE_BYTES=100_000), http)

    with pytest.raises(ProviderRejected, match="larger than") as caught:
        await provider.generate(call_for("gpt-image-2.5-flare", "openai"), sink)

    assert caught.value.type == BAD_OUTPUT
    assert sink.received == []


@pytest.mark.parametrize(
    ("name", "model", "said"),
    [
        ("openai", "dall-e-3", "model_not_found"),
        ("openai", "gpt-image-1", "model_not_found"),
        ("openai", "gpt-image-1.5", "model_not_found"),
        ("gemini", "imagen-4.0-generate-001", "NOT_FOUND"),
        ("gemini", "gemini-2.5-flash-image", "NOT_FOUND"),
        ("gemini", "gemini-3-pro-image-preview", "NOT_FOUND"),
    ],
)
async def test_a_model_the_provider_shut_down_fails_at_once_naming_it(sync_fake, http, sink, name, model, said):
    factory, _, _ = PROVIDERS[name]
    provider = factory(settings_for(sync_fake.base_url), http)

    with pytest.raises(ModelUnavailable) as caught:
        await provider.generate(call_for(model, provider.name), sink)

    assert not caught.value.retryable and caught.value.type == "ModelUnavailable"
    assert model in caught.value.message and said in caught.value.message
    assert "GET /v1/providers" in caught.value.message


@pytest.mark.parametrize(
    ("factory", "model", "spec", "field_name"),
    [
        (openai.OpenAIProvider.from_settings, "dall-e-4", {}, "model"),
        (openai.OpenAIProvider.from_settings, "dall-e-3", {}, "model"),
        (openai.OpenAIProvider.from_settings, "gpt-image-2.5-flare", {"prompt": "x" * 32001}, "prompt"),
        (openai.OpenAIProvider.from_settings, "gpt-image-2.5-flare", {"n": 11}, "n"),
        (openai.OpenAIProvider.from_settings, "gpt-image-2", {"quality": "ultra"}, "quality"),
        (google.GoogleProvider.from_settings, "gemini-3.1-flash-image", {"n": 5}, "n"),
        (google.GoogleProvider.from_settings, "imagen-4.0-generate-001", {}, "model"),
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
        (openai.OpenAIProvider.from_settings, "gpt-image-2.5-flare", {"aspect_ratio": "16:9"}, "size", "1536x1024"),
        (openai.OpenAIProvider.from_settings, "gpt-image-2", {"aspect_ratio": "1:2"}, "size", "1024x1536"),
        (openai.OpenAIProvider.from_settings, "gpt-image-2", {"size": "1600x1200"}, "size", "1536x1024"),
        (google.GoogleProvider.from_settings, "gemini-3.1-flash-image", {"size": "1080x1920"}, "aspectRatio", "9:16"),
        (google.GoogleProvider.from_settings, "gemini-3-pro-image", {"aspect_ratio": "5:4"}, "aspectRatio", "5:4"),
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


def test_providers_without_configuration_say_why() -> None:
    settings = Settings(_env_file=None)
    assert (
        replicate.ReplicateProvider.from_settings(settings, None).disabled_reason() == "REPLICATE_API_TOKEN is not set"
    )
    assert (
        midjourney.MidjourneyProvider.from_settings(settings, None).disabled_reason()
        == "MIDJOURNEY_BASE_URL is not set"
    )
    info = replicate.ReplicateProvider.from_settings(settings, None).info()
    assert (info.enabled, info.mode, info.webhooks) == (False, "async", True)


def test_success_without_an_image_is_bad_output() -> None:
    event = midjourney.task_event({"id": "t1", "status": "SUCCESS", "progress": "100%", "imageUrl": None})
    assert (event.status, event.error_type) == ("failed", BAD_OUTPUT)
    event = replicate.prediction_event({"id": "p1", "status": "succeeded", "output": "data:image/png;base64,AAAA"})
    assert (event.status, event.error_type) == ("failed", BAD_OUTPUT)


async def test_scripted_moderation_fails_each_service_its_own_way(
    replicate_provider: ReplicateProvider, mj_provider: MidjourneyProvider, async_fake: AsyncFake
) -> None:
    async_fake.script.queue(REPLICATE_CREATE, "moderation")
    async_fake.script.queue(MIDJOURNEY_IMAGINE, "moderation")

    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))
    final = (await poll_until_terminal(lambda: replicate_provider.poll(submitted.provider_job_id)))[-1]
    assert (final.status, final.error_type) == ("failed", CONTENT_POLICY)

    with pytest.raises(ProviderRejected) as caught:
        await mj_provider.submit(call("midjourney", "midjourney"))
    assert caught.value.type == CONTENT_POLICY


async def test_an_html_page_instead_of_json_is_bad_output(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake
) -> None:
    async_fake.script.queue(REPLICATE_CREATE, "html")

    with pytest.raises(ProviderRejected) as caught:
        await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    assert caught.value.type == BAD_OUTPUT


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("pollinations", "flux"),
        ("replicate", "black-forest-labs/flux-schnell"),
        ("stability", "stable-image-core"),
    ],
)
def test_models_that_draw_from_text_alone_refuse_an_input_image(provider: str, model: str) -> None:
    with pytest.raises(InvalidJobRequest) as raised:
        all_providers()[provider].check_request(
            model, PromptSpec(prompt=UPSCALE_PROMPT, previous_image="https://x.test/a.png")
        )
    assert raised.value.field == "previousImage"
    assert "cannot use previousImage" in raised.value.message


async def test_an_input_image_is_refused_with_a_422_where_it_cannot_be_used(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    input_url = f"{fake_providers.url}/outputs/input.png"
    async with running_stack(provider_settings, temporal_client, workers=False) as stack:
        answers = [
            await stack.api.post(
                "/v1/jobs",
                json={
                    "workflowId": "canvas-input",
                    "nodeId": "n1",
                    "provider": provider,
                    "model": model,
                    "promptSpec": {"basePrompt": UPSCALE_PROMPT, "previousImage": input_url},
                },
            )
            for provider, model in (("pollinations", "flux"), ("stability", "stable-image-core"))
        ]
        jobs = (await stack.api.get("/v1/jobs", params={"workflowId": "canvas-input"})).json()["items"]
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.json()["code"] == "unsupported_request"
        assert answer.json()["details"] == [{"field": "promptSpec.previousImage", "message": answer.json()["message"]}]
    assert jobs == []
    assert fake_providers.recorder.requests == []


@pytest.mark.parametrize(
    ("prompt_spec", "field", "message"),
    [
        ({"previousImage": "ftp://example.com/a.png"}, "promptSpec.previousImage", "http or https URL"),
        ({"previousImage": "data:image/png;base64,iVBORw0KGgo="}, "promptSpec.previousImage", "http or https URL"),
        ({"previousImage": "/relative/a.png"}, "promptSpec.previousImage", "http or https URL"),
        ({"strength": 0.5}, "promptSpec", "strength only applies to a previous image"),
        ({"previousImage": "https://example.com/a.png", "strength": 1.5}, "promptSpec.strength", "less than or equal"),
    ],
    ids=["ftp", "data-uri", "relative", "strength-alone", "strength-above-1"],
)
async def test_the_api_checks_the_input_image_fields(
    prompt_spec: dict[str, Any],
    field: str,
    message: str,
    provider_settings: Settings,
    fake_providers: FakeProviders,
    temporal_client: Client,
) -> None:
    async with running_stack(provider_settings, temporal_client, workers=False) as stack:
        answer = await stack.api.post(
            "/v1/jobs",
            json={
                "workflowId": "canvas-fields",
                "nodeId": "n1",
                "provider": "stability",
                "model": "sd3.5-large",
                "promptSpec": {"basePrompt": UPSCALE_PROMPT, **prompt_spec},
            },
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_request"
    (detail,) = answer.json()["details"]
    assert detail["field"] == field and message in detail["message"], detail
