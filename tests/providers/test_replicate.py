"""Replicate: predictions, webhooks, statuses, errors, any owner/name[:version] model, against the fake."""

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
    CONTENT_POLICY,
    INVALID_REQUEST,
    JOB_FAILED,
    InvalidJobRequest,
    ProviderRejected,
    ProviderUnavailable,
    WebhookRejected,
)
from models.payloads import PromptSpec, ProviderCall
from providers.adapters import replicate
from providers.adapters.replicate import ReplicateProvider
from providers.webhooks import job_webhook_url
from tests.fakes.async_base import REPLICATE_TOKEN
from tests.fakes.base import image_bytes
from tests.fakes.replicate import NSFW_ERROR, REPLICATE_CREATE
from tests.fakes.server import RecordedRequest, free_port, mock_http
from tests.fixtures.async_adapters import (
    PNG_SIGNATURE,
    SDXL_VERSION,
    THROTTLED,
    AsyncFake,
    Receiver,
    call,
    fake_settings,
    poll_until_terminal,
    received_hooks,
)
from tests.fixtures.providers import E2E_PROMPT, Case


async def test_replicate_submit_matches_the_wire_shape(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake, receiver: Receiver
) -> None:
    hook = receiver.hook_url("replicate", "job-1")
    result = await replicate_provider.submit(
        call("replicate", "black-forest-labs/flux-schnell", hook, seed=7, n=2, size="1920x1080")
    )

    [request] = async_fake.requests("POST", "/replicate/v1/models/black-forest-labs/flux-schnell/predictions")
    assert request.headers["authorization"] == f"Bearer {REPLICATE_TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "input": {
            "prompt": "a lighthouse at dusk",
            "seed": 7,
            "num_outputs": 2,
            "aspect_ratio": "16:9",
            "output_format": "png",
        },
        "webhook": hook,
        "webhook_events_filter": ["start", "output", "logs", "completed"],
    }
    assert result.provider_job_id in async_fake.state.predictions
    assert result.effective == {"num_outputs": 2, "aspect_ratio": "16:9", "output_format": "png"}


async def test_replicate_pinned_version_posts_to_predictions(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake
) -> None:
    model = f"stability-ai/sdxl:{SDXL_VERSION}"
    await replicate_provider.submit(call("replicate", model, negative_prompt="blurry", aspect_ratio="3:2"))

    [request] = async_fake.requests("POST", "/replicate/v1/predictions")
    assert request.json() == {
        "version": SDXL_VERSION,
        "input": {
            "prompt": "a lighthouse at dusk",
            "negative_prompt": "blurry",
            "num_outputs": 1,
            "width": 1024,
            "height": 680,
        },
    }


async def test_replicate_poll_maps_statuses_progress_and_provenance(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake, http: httpx.AsyncClient
) -> None:
    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-dev", seed=42, n=2))

    events = await poll_until_terminal(lambda: replicate_provider.poll(submitted.provider_job_id))

    assert [(event.status, event.progress) for event in events] == [
        ("queued", None),
        ("running", 0.0),
        ("running", 50.0),
        ("succeeded", 100.0),
    ]
    final = events[-1]
    assert len(final.output_urls) == 2
    for url in final.output_urls:
        assert (await http.get(url)).content.startswith(PNG_SIGNATURE)
    assert final.provenance.provider_job_id == submitted.provider_job_id
    assert final.provenance.seed == 42
    assert final.provenance.predict_time is not None and final.provenance.predict_time > 0
    assert async_fake.requests("GET", f"/replicate/v1/predictions/{submitted.provider_job_id}")


async def test_replicate_cancel_hits_the_endpoint(replicate_provider: ReplicateProvider, async_fake: AsyncFake) -> None:
    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    await replicate_provider.cancel(submitted.provider_job_id)

    [request] = async_fake.requests("POST", f"/replicate/v1/predictions/{submitted.provider_job_id}/cancel")
    assert request.headers["authorization"] == f"Bearer {REPLICATE_TOKEN}"
    assert (await replicate_provider.poll(submitted.provider_job_id)).status == "cancelled"


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [(NSFW_ERROR, CONTENT_POLICY), ("CUDA out of memory", JOB_FAILED)],
    ids=["nsfw", "crash"],
)
async def test_replicate_failed_prediction_is_classified(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake, failure: str, error_type: str
) -> None:
    async_fake.options.replicate_failure = failure
    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    final = (await poll_until_terminal(lambda: replicate_provider.poll(submitted.provider_job_id)))[-1]

    assert (final.status, final.error_type) == ("failed", error_type)
    assert final.error is not None and failure in final.error


@pytest.mark.parametrize(
    ("answer", "retry_after"),
    [
        (("status", 429, THROTTLED), timedelta(seconds=30)),
        (("status", 429, THROTTLED, {"retry-after": "7"}), timedelta(seconds=7)),
        (("status", 500, {"title": "Internal Server Error", "detail": "", "status": 500}), None),
        (("status", 503), None),
        (("status", 408), None),
    ],
    ids=["429-detail-hint", "429-retry-after-header", "500", "503-empty", "408"],
)
async def test_replicate_transient_errors_are_retryable_with_the_hint(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake, answer: tuple[Any, ...], retry_after: timedelta | None
) -> None:
    async_fake.script.queue(REPLICATE_CREATE, answer)

    with pytest.raises(ProviderUnavailable) as caught:
        await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    assert caught.value.retryable
    assert caught.value.retry_after == retry_after
    assert f"HTTP {answer[1]}" in caught.value.message


async def test_replicate_bad_token_is_an_auth_error(async_fake: AsyncFake, http: httpx.AsyncClient) -> None:
    provider = replicate.ReplicateProvider.from_settings(
        fake_settings(async_fake, REPLICATE_API_TOKEN="r8_wrong"), http
    )

    with pytest.raises(ProviderRejected) as caught:
        await provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    assert caught.value.type == AUTH and not caught.value.retryable
    assert "REPLICATE_API_TOKEN" in caught.value.message
    assert "valid authentication token" in caught.value.message


async def test_replicate_validation_error_is_not_retryable(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake
) -> None:
    detail = "- input.num_outputs: Must be less than or equal to 4"
    async_fake.script.queue(REPLICATE_CREATE, ("status", 422, {"title": "Input validation failed", "detail": detail}))

    with pytest.raises(ProviderRejected) as caught:
        await replicate_provider.submit(call("replicate", "someone/some-model"))

    assert caught.value.type == INVALID_REQUEST
    assert detail in caught.value.message


async def test_replicate_timeout_and_refused_connection_are_retryable(
    async_fake: AsyncFake, http: httpx.AsyncClient
) -> None:
    slow = replicate.ReplicateProvider.from_settings(fake_settings(async_fake, PROVIDER_TIMEOUT_SECONDS=0.2), http)
    async_fake.script.queue(REPLICATE_CREATE, "slow")
    with pytest.raises(ProviderUnavailable, match="in time"):
        await slow.submit(call("replicate", "black-forest-labs/flux-schnell"))

    closed = replicate.ReplicateProvider.from_settings(
        fake_settings(async_fake, REPLICATE_BASE_URL=f"http://127.0.0.1:{free_port()}"), http
    )
    with pytest.raises(ProviderUnavailable, match="reach"):
        await closed.poll("anything")


async def test_replicate_webhooks_from_the_fake_verify_and_parse(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake, receiver: Receiver
) -> None:
    hook = receiver.hook_url("replicate", "job-1")
    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell", hook, n=1))

    hooks = await received_hooks(receiver, async_fake)

    events = []
    for delivery in hooks:
        assert delivery.path == "/v1/webhooks/replicate/job-1"
        replicate_provider.verify_webhook("job-1", delivery.headers, delivery.body)
        events.append(replicate_provider.parse_webhook(delivery.body, delivery.headers))
    assert [event.status for event in events] == ["queued", "running", "running", "succeeded"]
    assert [event.delivery_id for event in events] == [delivery.headers["webhook-id"] for delivery in hooks]
    assert len({event.delivery_id for event in events}) == 4
    assert events[-1].output_urls and events[-1].provenance.provider_job_id == submitted.provider_job_id

    with pytest.raises(WebhookRejected, match="no matching signature"):
        replicate_provider.verify_webhook("job-1", hooks[-1].headers, hooks[-1].body.replace(b"succeeded", b"failed"))


async def test_replicate_duplicated_and_reversed_webhooks_keep_their_delivery_ids(
    replicate_provider: ReplicateProvider, async_fake: AsyncFake, receiver: Receiver
) -> None:
    async_fake.options.webhook_copies, async_fake.options.webhook_reversed = 2, True
    hook = receiver.hook_url("replicate", "job-1")
    await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell", hook))

    hooks = await received_hooks(receiver, async_fake)

    for delivery in hooks:
        replicate_provider.verify_webhook("job-1", delivery.headers, delivery.body)
    events = [replicate_provider.parse_webhook(delivery.body, delivery.headers) for delivery in hooks]
    assert [event.status for event in events] == ["succeeded", "succeeded", "running", "running"] + ["running"] * 2 + [
        "queued"
    ] * 2
    assert events[0].delivery_id == events[1].delivery_id
    assert len({event.delivery_id for event in events}) == 4


async def test_replicate_without_webhook_secret_asks_for_no_webhook(
    async_fake: AsyncFake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    provider = replicate.ReplicateProvider.from_settings(fake_settings(async_fake, REPLICATE_WEBHOOK_SECRET=None), http)
    await provider.submit(call("replicate", "black-forest-labs/flux-schnell", receiver.hook_url("replicate", "j")))

    [request] = async_fake.requests("POST", "/replicate/v1/models/.*/predictions")
    assert "webhook" not in request.json()
    with pytest.raises(WebhookRejected, match="REPLICATE_WEBHOOK_SECRET"):
        provider.verify_webhook("j", {}, b"{}")


def test_replicate_parse_webhook_without_headers_derives_a_delivery_id() -> None:
    provider = replicate.ReplicateProvider.from_settings(Settings(_env_file=None), None)
    body = b'{"id": "p1", "status": "processing", "logs": " 45%|####      | 9/20"}'

    event = provider.parse_webhook(body)

    assert (event.status, event.progress, event.delivery_id) == ("running", 45.0, "p1:running:45.0")
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(b"not json")


@pytest.mark.parametrize(
    ("model", "spec", "field"),
    [
        ("black-forest-labs/flux-1.1-pro", {"n": 2}, "n"),
        ("black-forest-labs/flux-schnell", {"negative_prompt": "text"}, "negativePrompt"),
        ("flux-schnell", {}, "model"),
    ],
    ids=["too-many-outputs", "negative-prompt", "model-id"],
)
def test_replicate_refuses_what_the_model_cannot_do(model: str, spec: dict[str, Any], field: str | None) -> None:
    provider = replicate.ReplicateProvider.from_settings(Settings(_env_file=None), None)
    with pytest.raises(InvalidJobRequest) as caught:
        provider.check_request(model, PromptSpec(prompt="x", **spec))
    assert caught.value.field == field


def check_replicate(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    assert request.headers["authorization"] == f"Bearer {REPLICATE_TOKEN}"
    body = request.json()
    assert body["input"]["prompt"] == E2E_PROMPT
    assert body["input"]["aspect_ratio"] == "16:9"
    assert body["input"]["num_outputs"] == 1
    assert body["input"]["seed"] == 42
    assert body["webhook"] == job_webhook_url(
        settings.WEBHOOK_SECRET, settings.app_url, "replicate", record["jobId"], 1
    )
    assert "completed" in body["webhook_events_filter"]
    assert set(body["webhook_events_filter"]) <= {"start", "output", "logs", "completed"}
    assert "version" not in body  # owner/name: the model's latest version, by path
    assert record["seed"] == 42 and record["providerJobId"] and record["predictTime"] is not None


# This provider's jobs through the whole product, run by tests/test_providers_e2e.py.
E2E_CASES = [
    Case(
        "replicate",
        "black-forest-labs/flux-schnell",
        {"aspectRatio": "16:9", "seed": 42},
        "POST",
        "/replicate/v1/models/black-forest-labs/flux-schnell/predictions",
        check_replicate,
        polls="/replicate/v1/predictions/",
    ),
]


def schema_answer(properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"components": {"schemas": {"Input": {"properties": {"prompt": {"type": "string"}, **properties}}}}}
    return {"latest_version": {"id": "v1", "openapi_schema": schema}}


def mock_replicate(properties: dict[str, Any], image: bytes) -> tuple[ReplicateProvider, list[httpx.Request]]:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and "/models/" in request.url.path:
            model = schema_answer(properties)
            return httpx.Response(200, json=model["latest_version"] if "/versions/" in request.url.path else model)
        if request.url.path.endswith("/files"):
            return httpx.Response(201, json={"id": "f1", "urls": {"get": "https://api.replicate.test/v1/files/f1"}})
        return httpx.Response(201, json={"id": "p1", "status": "starting"})

    http, sent = mock_http(answer, input_image=image)
    settings = Settings(_env_file=None, REPLICATE_API_TOKEN="r8_k", DOWNLOAD_ALLOWLIST=["img.test"])
    return ReplicateProvider.from_settings(settings, http), sent


def image_call(model: str) -> ProviderCall:
    spec = PromptSpec(prompt="make it night", previous_image="http://img.test/a.png")
    return ProviderCall("job-1", "canvas-1", "node-1", "replicate", model, spec)


@pytest.mark.parametrize(
    ("properties", "field", "as_list"),
    [
        ({"input_image": {"type": "string", "format": "uri"}}, "input_image", False),
        ({"image": {"type": "string", "format": "uri"}, "mask": {"type": "string", "format": "uri"}}, "image", False),
        ({"input_images": {"type": "array", "items": {"type": "string", "format": "uri"}}}, "input_images", True),
        ({"reference_image_url": {"type": "string", "format": "uri"}}, "reference_image_url", False),
    ],
    ids=["input_image", "image-not-mask", "list", "other-image-name"],
)
async def test_the_image_goes_in_the_field_the_models_schema_names(
    properties: dict[str, Any], field: str, as_list: bool
) -> None:
    source = image_bytes((8, 8), "PNG")
    provider, sent = mock_replicate(properties, source)
    await provider.submit(image_call("acme/some-editor"))
    schema_call, create = sent
    assert schema_call.url.path == "/v1/models/acme/some-editor"
    value = json.loads(create.content)["input"][field]
    uri = value[0] if as_list else value
    assert isinstance(value, list) is as_list
    assert uri == "data:image/png;base64," + base64.b64encode(source).decode()


async def test_a_large_image_is_uploaded_and_its_file_url_sent() -> None:
    large = image_bytes((900, 900), "PNG") + b"\0" * (1024 * 1024)  # past the data-URI limit
    provider, sent = mock_replicate({"image": {"type": "string", "format": "uri"}}, large)
    await provider.submit(image_call("acme/some-editor:abc123"))
    schema_call, upload, create = sent
    assert schema_call.url.path == "/v1/models/acme/some-editor/versions/abc123"
    assert upload.url.path == "/v1/files" and large in upload.content
    assert json.loads(create.content)["input"]["image"] == "https://api.replicate.test/v1/files/f1"


async def test_an_unlisted_model_without_an_image_input_is_refused_for_good() -> None:
    provider, sent = mock_replicate({"seed": {"type": "integer"}}, image_bytes((8, 8), "PNG"))
    with pytest.raises(ProviderRejected) as refused:
        await provider.submit(image_call("acme/text-only"))
    assert refused.value.type == INVALID_REQUEST and "no image input" in refused.value.message
    assert [request.method for request in sent] == ["GET"]  # nothing was created, nothing billed


def test_listed_models_that_draw_from_text_are_refused_before_any_call() -> None:
    provider = ReplicateProvider.from_settings(Settings(_env_file=None), None)
    with pytest.raises(InvalidJobRequest) as refused:
        provider.check_request("black-forest-labs/flux-schnell", image_call("x").spec)
    assert refused.value.field == "previousImage" and "flux-kontext-pro" in refused.value.message
