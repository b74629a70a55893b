"""The asynchronous adapters (Replicate, midjourney-proxy) against the fake services, over real sockets."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
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
    JOB_FAILED,
    InvalidJobRequest,
    ProviderRejected,
    ProviderUnavailable,
    WebhookRejected,
)
from models.payloads import PromptSpec, ProviderCall, ProviderEvent
from providers import midjourney, replicate
from providers.midjourney import MidjourneyProvider
from providers.replicate import ReplicateProvider
from tests.fakes.async_providers import (
    MIDJOURNEY_FETCH,
    MIDJOURNEY_IMAGINE,
    NSFW_ERROR,
    REPLICATE_CREATE,
    REPLICATE_TOKEN,
    REPLICATE_WEBHOOK_SECRET,
    AsyncFakeState,
    AsyncOptions,
    create_async_fake,
)
from tests.fakes.script import Script
from tests.fakes.server import RecordedRequest, Recorder, free_port, serve

OUR_SECRET = "test-webhook-secret"
MJ_SECRET = "mj-secret"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


@dataclass
class Fake:
    url: str
    recorder: Recorder
    script: Script
    state: AsyncFakeState

    @property
    def options(self) -> AsyncOptions:
        return self.state.options

    def requests(self, method: str, pattern: str) -> list[RecordedRequest]:
        return [r for r in self.recorder.requests if r.method == method and re.fullmatch(pattern, r.path)]


@dataclass
class Receiver:
    """Our side of the callbacks: records what the fake POSTs to the webhook URLs."""

    url: str
    recorder: Recorder

    def hook_url(self, provider: str, job_id: str) -> str:
        return f"{self.url}/v1/webhooks/{provider}/{job_id}"


@pytest.fixture(scope="module")
async def fake_server() -> AsyncIterator[Fake]:
    recorder, script = Recorder(), Script()
    app = create_async_fake(recorder, script, webhook_secret=REPLICATE_WEBHOOK_SECRET)
    async with serve(app) as url:
        try:
            yield Fake(url, recorder, script, app.state.fake)
        finally:
            await app.state.fake.aclose()


@pytest.fixture
async def fake(fake_server: Fake) -> Fake:
    """The served fake with fresh options and no jobs, scripted behaviours or recorded requests."""
    await fake_server.state.reset(AsyncOptions(midjourney_secret=MJ_SECRET))
    return fake_server


@pytest.fixture(scope="module")
async def receiver_server() -> AsyncIterator[Receiver]:
    recorder = Recorder()

    async def accept(request: Request) -> Response:
        recorder.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=dict(request.query_params),
                headers=dict(request.headers),
                body=await request.body(),
            )
        )
        return Response(status_code=200)

    app = Starlette(routes=[Route("/v1/webhooks/{provider}/{job_id}", accept, methods=["POST"])])
    async with serve(app) as url:
        yield Receiver(url, recorder)


@pytest.fixture
def receiver(receiver_server: Receiver) -> Receiver:
    receiver_server.recorder.clear()
    return receiver_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def fake_settings(fake: Fake, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "REPLICATE_API_TOKEN": REPLICATE_TOKEN,
        "REPLICATE_BASE_URL": f"{fake.url}/replicate/v1",
        "REPLICATE_WEBHOOK_SECRET": REPLICATE_WEBHOOK_SECRET,
        "MIDJOURNEY_BASE_URL": f"{fake.url}/mj",
        "MIDJOURNEY_API_KEY": MJ_SECRET,
        "WEBHOOK_SECRET": OUR_SECRET,
        "PROVIDER_TIMEOUT_SECONDS": 2.0,
    }
    return Settings(_env_file=None, **(values | overrides))


@pytest.fixture
def replicate_provider(fake: Fake, http: httpx.AsyncClient) -> ReplicateProvider:
    return replicate.ReplicateProvider.from_settings(fake_settings(fake), http)


@pytest.fixture
def mj_provider(fake: Fake, http: httpx.AsyncClient) -> MidjourneyProvider:
    return midjourney.MidjourneyProvider.from_settings(fake_settings(fake), http)


def call(provider: str, model: str, webhook_url: str | None = None, **spec: Any) -> ProviderCall:
    return ProviderCall(
        job_id="job-1",
        canvas_id="canvas-1",
        node_id="node-1",
        provider=provider,
        model=model,
        spec=PromptSpec(**({"prompt": "a lighthouse at dusk"} | spec)),
        webhook_url=webhook_url,
    )


async def poll_until_terminal(poll: Callable[[], Any], timeout: float = 5.0) -> list[ProviderEvent]:
    """Poll every 20 ms; the events whose (status, progress) changed, in order."""
    seen: list[ProviderEvent] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        event: ProviderEvent = await poll()
        if not seen or (seen[-1].status, seen[-1].progress) != (event.status, event.progress):
            seen.append(event)
        if event.terminal:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"no terminal event within {timeout}s: {seen}")


async def received_hooks(receiver: Receiver, fake: Fake) -> list[RecordedRequest]:
    await fake.state.settle()
    return receiver.recorder.requests


# Replicate --------------------------------------------------------------------------------------------------


async def test_replicate_submit_matches_the_wire_shape(
    replicate_provider: ReplicateProvider, fake: Fake, receiver: Receiver
) -> None:
    hook = receiver.hook_url("replicate", "job-1")
    result = await replicate_provider.submit(
        call("replicate", "black-forest-labs/flux-schnell", hook, seed=7, n=2, size="1920x1080")
    )

    [request] = fake.requests("POST", "/replicate/v1/models/black-forest-labs/flux-schnell/predictions")
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
    assert result.provider_job_id in fake.state.predictions
    assert result.effective == {"num_outputs": 2, "aspect_ratio": "16:9", "output_format": "png"}


async def test_replicate_pinned_version_posts_to_predictions(replicate_provider: ReplicateProvider, fake: Fake) -> None:
    model = f"stability-ai/sdxl:{SDXL_VERSION}"
    await replicate_provider.submit(call("replicate", model, negative_prompt="blurry", aspect_ratio="3:2"))

    [request] = fake.requests("POST", "/replicate/v1/predictions")
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
    replicate_provider: ReplicateProvider, fake: Fake, http: httpx.AsyncClient
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
    assert fake.requests("GET", f"/replicate/v1/predictions/{submitted.provider_job_id}")


async def test_replicate_cancel_hits_the_endpoint(replicate_provider: ReplicateProvider, fake: Fake) -> None:
    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    await replicate_provider.cancel(submitted.provider_job_id)

    [request] = fake.requests("POST", f"/replicate/v1/predictions/{submitted.provider_job_id}/cancel")
    assert request.headers["authorization"] == f"Bearer {REPLICATE_TOKEN}"
    assert (await replicate_provider.poll(submitted.provider_job_id)).status == "cancelled"


@pytest.mark.parametrize(
    ("failure", "error_type"),
    [(NSFW_ERROR, CONTENT_POLICY), ("CUDA out of memory", JOB_FAILED)],
    ids=["nsfw", "crash"],
)
async def test_replicate_failed_prediction_is_classified(
    replicate_provider: ReplicateProvider, fake: Fake, failure: str, error_type: str
) -> None:
    fake.options.replicate_failure = failure
    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    final = (await poll_until_terminal(lambda: replicate_provider.poll(submitted.provider_job_id)))[-1]

    assert (final.status, final.error_type) == ("failed", error_type)
    assert final.error is not None and failure in final.error


THROTTLED = {
    "title": "Request was throttled.",
    "detail": "Request was throttled. Your rate limit resets in ~30s.",
    "status": 429,
}


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
    replicate_provider: ReplicateProvider, fake: Fake, answer: tuple[Any, ...], retry_after: timedelta | None
) -> None:
    fake.script.queue(REPLICATE_CREATE, answer)

    with pytest.raises(ProviderUnavailable) as caught:
        await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    assert caught.value.retryable
    assert caught.value.retry_after == retry_after
    assert f"HTTP {answer[1]}" in caught.value.message


async def test_replicate_bad_token_is_an_auth_error(fake: Fake, http: httpx.AsyncClient) -> None:
    provider = replicate.ReplicateProvider.from_settings(fake_settings(fake, REPLICATE_API_TOKEN="r8_wrong"), http)

    with pytest.raises(ProviderRejected) as caught:
        await provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    assert caught.value.type == AUTH and not caught.value.retryable
    assert "REPLICATE_API_TOKEN" in caught.value.message
    assert "valid authentication token" in caught.value.message


async def test_replicate_validation_error_is_not_retryable(replicate_provider: ReplicateProvider, fake: Fake) -> None:
    detail = "- input.num_outputs: Must be less than or equal to 4"
    fake.script.queue(REPLICATE_CREATE, ("status", 422, {"title": "Input validation failed", "detail": detail}))

    with pytest.raises(ProviderRejected) as caught:
        await replicate_provider.submit(call("replicate", "someone/some-model"))

    assert caught.value.type == INVALID_REQUEST
    assert detail in caught.value.message


async def test_replicate_timeout_and_refused_connection_are_retryable(fake: Fake, http: httpx.AsyncClient) -> None:
    slow = replicate.ReplicateProvider.from_settings(fake_settings(fake, PROVIDER_TIMEOUT_SECONDS=0.2), http)
    fake.script.queue(REPLICATE_CREATE, "slow")
    with pytest.raises(ProviderUnavailable, match="in time"):
        await slow.submit(call("replicate", "black-forest-labs/flux-schnell"))

    closed = replicate.ReplicateProvider.from_settings(
        fake_settings(fake, REPLICATE_BASE_URL=f"http://127.0.0.1:{free_port()}"), http
    )
    with pytest.raises(ProviderUnavailable, match="reach"):
        await closed.poll("anything")


async def test_replicate_webhooks_from_the_fake_verify_and_parse(
    replicate_provider: ReplicateProvider, fake: Fake, receiver: Receiver
) -> None:
    hook = receiver.hook_url("replicate", "job-1")
    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell", hook, n=1))

    hooks = await received_hooks(receiver, fake)

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
    replicate_provider: ReplicateProvider, fake: Fake, receiver: Receiver
) -> None:
    fake.options.webhook_copies, fake.options.webhook_reversed = 2, True
    hook = receiver.hook_url("replicate", "job-1")
    await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell", hook))

    hooks = await received_hooks(receiver, fake)

    for delivery in hooks:
        replicate_provider.verify_webhook("job-1", delivery.headers, delivery.body)
    events = [replicate_provider.parse_webhook(delivery.body, delivery.headers) for delivery in hooks]
    assert [event.status for event in events] == ["succeeded", "succeeded", "running", "running"] + ["running"] * 2 + [
        "queued"
    ] * 2
    assert events[0].delivery_id == events[1].delivery_id
    assert len({event.delivery_id for event in events}) == 4


async def test_replicate_without_webhook_secret_asks_for_no_webhook(
    fake: Fake, http: httpx.AsyncClient, receiver: Receiver
) -> None:
    provider = replicate.ReplicateProvider.from_settings(fake_settings(fake, REPLICATE_WEBHOOK_SECRET=None), http)
    await provider.submit(call("replicate", "black-forest-labs/flux-schnell", receiver.hook_url("replicate", "j")))

    [request] = fake.requests("POST", "/replicate/v1/models/.*/predictions")
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


# Midjourney -------------------------------------------------------------------------------------------------


async def test_midjourney_submit_matches_the_wire_shape(
    mj_provider: MidjourneyProvider, fake: Fake, receiver: Receiver
) -> None:
    hook = receiver.hook_url("midjourney", "job-1")
    result = await mj_provider.submit(
        call("midjourney", "v7", hook, size="1920x1080", seed=42, negative_prompt="text, watermark")
    )

    [request] = fake.requests("POST", "/mj/submit/imagine")
    assert request.headers["mj-api-secret"] == MJ_SECRET
    assert request.json() == {
        "prompt": "a lighthouse at dusk --ar 16:9 --seed 42 --no text, watermark --v 7",
        "base64Array": [],
        "notifyHook": hook,
        "state": "job-1",
    }
    assert result.provider_job_id in fake.state.tasks
    assert result.effective == {"aspect_ratio": "16:9"}


async def test_midjourney_submit_without_hook_or_key(fake: Fake, http: httpx.AsyncClient) -> None:
    fake.options.midjourney_secret = None
    provider = midjourney.MidjourneyProvider.from_settings(fake_settings(fake, MIDJOURNEY_API_KEY=None), http)

    await provider.submit(call("midjourney", "midjourney"))

    [request] = fake.requests("POST", "/mj/submit/imagine")
    assert "mj-api-secret" not in request.headers
    assert request.json() == {"prompt": "a lighthouse at dusk", "base64Array": [], "state": "job-1"}


async def test_midjourney_poll_maps_statuses_and_progress(
    mj_provider: MidjourneyProvider, fake: Fake, http: httpx.AsyncClient
) -> None:
    submitted = await mj_provider.submit(call("midjourney", "midjourney"))

    events = await poll_until_terminal(lambda: mj_provider.poll(submitted.provider_job_id))

    assert [(event.status, event.progress) for event in events] == [
        ("queued", None),
        ("running", 0.0),
        ("running", 45.0),
        ("succeeded", 100.0),
    ]
    [image_url] = events[-1].output_urls
    assert (await http.get(image_url)).content.startswith(PNG_SIGNATURE)
    assert events[-1].provenance.provider_job_id == submitted.provider_job_id
    assert events[-1].provenance.predict_time is not None
    assert fake.requests("GET", f"/mj/task/{submitted.provider_job_id}/fetch")


@pytest.mark.parametrize(
    ("reason", "error_type"),
    [("Banned prompt detected: gore", CONTENT_POLICY), ("Discord interaction failed", JOB_FAILED)],
    ids=["banned", "other"],
)
async def test_midjourney_failed_task_is_classified(
    mj_provider: MidjourneyProvider, fake: Fake, reason: str, error_type: str
) -> None:
    fake.options.midjourney_fail_reason = reason
    submitted = await mj_provider.submit(call("midjourney", "midjourney"))

    final = (await poll_until_terminal(lambda: mj_provider.poll(submitted.provider_job_id)))[-1]

    assert (final.status, final.error_type) == ("failed", error_type)
    assert final.error is not None and reason in final.error


async def test_midjourney_unknown_task_fails_the_job(mj_provider: MidjourneyProvider, fake: Fake) -> None:
    event = await mj_provider.poll("1712205491372999")

    assert (event.status, event.error_type) == ("failed", JOB_FAILED)
    assert event.error is not None and "1712205491372999" in event.error


async def test_midjourney_cancel_is_a_no_op(mj_provider: MidjourneyProvider, fake: Fake) -> None:
    await mj_provider.cancel("1712205491372999")
    assert fake.recorder.requests == []


async def test_midjourney_banned_prompt_names_the_word(mj_provider: MidjourneyProvider, fake: Fake) -> None:
    with pytest.raises(ProviderRejected) as caught:
        await mj_provider.submit(call("midjourney", "midjourney", prompt="a gore scene"))

    assert caught.value.type == CONTENT_POLICY and not caught.value.retryable
    assert "'gore'" in caught.value.message


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"code": 22, "description": "In queue", "result": "1712205491372111", "properties": {"numberOfQueues": 2}},
            "1712205491372111",
        ),
        ({"code": 21, "description": "Task already exists", "result": "1712205491372222"}, "1712205491372222"),
        (
            {"code": 23, "description": "Queue full, please try again later", "properties": {"numberOfQueues": 10}},
            ProviderUnavailable,
        ),
        ({"code": 9, "description": "Discord account unavailable"}, ProviderUnavailable),
        ({"code": 4, "description": "base64 format error"}, INVALID_REQUEST),
    ],
    ids=["queued", "exists", "queue-full", "failure", "validation"],
)
async def test_midjourney_submit_codes(
    mj_provider: MidjourneyProvider, fake: Fake, answer: dict[str, Any], expected: Any
) -> None:
    fake.script.queue(MIDJOURNEY_IMAGINE, ("status", 200, answer))
    submitting = mj_provider.submit(call("midjourney", "midjourney"))

    if expected is ProviderUnavailable:
        with pytest.raises(ProviderUnavailable, match=answer["description"]):
            await submitting
    elif expected == INVALID_REQUEST:
        with pytest.raises(ProviderRejected, match=answer["description"]) as caught:
            await submitting
        assert caught.value.type == INVALID_REQUEST
    else:
        assert (await submitting).provider_job_id == expected


async def test_midjourney_http_errors_are_classified(fake: Fake, http: httpx.AsyncClient) -> None:
    wrong_key = midjourney.MidjourneyProvider.from_settings(fake_settings(fake, MIDJOURNEY_API_KEY="wrong"), http)
    with pytest.raises(ProviderRejected) as caught:
        await wrong_key.submit(call("midjourney", "midjourney"))
    assert caught.value.type == AUTH and "MIDJOURNEY_API_KEY" in caught.value.message

    fake.script.queue(MIDJOURNEY_FETCH, ("status", 502, "Bad Gateway", {"retry-after": "3"}))
    provider = midjourney.MidjourneyProvider.from_settings(fake_settings(fake), http)
    with pytest.raises(ProviderUnavailable) as unavailable:
        await provider.poll("1712205491372999")
    assert unavailable.value.retry_after == timedelta(seconds=3)


async def test_midjourney_notify_hooks_parse(mj_provider: MidjourneyProvider, fake: Fake, receiver: Receiver) -> None:
    hook = receiver.hook_url("midjourney", "job-1")
    submitted = await mj_provider.submit(call("midjourney", "midjourney", hook))

    hooks = await received_hooks(receiver, fake)

    events = []
    for delivery in hooks:
        assert "webhook-signature" not in delivery.headers
        assert delivery.json()["state"] == "job-1"
        assert delivery.path == "/v1/webhooks/midjourney/job-1"  # the hook as handed over; its token is the route's
        events.append(mj_provider.parse_webhook(delivery.body))
    assert [delivery.json()["progress"] for delivery in hooks] == ["", "0%", "45%", "100%"]
    assert [(event.status, event.progress) for event in events] == [
        ("queued", None),
        ("running", 0.0),
        ("running", 45.0),
        ("succeeded", 100.0),
    ]
    task_id = submitted.provider_job_id
    assert [event.delivery_id for event in events] == [
        f"{task_id}:SUBMITTED:",
        f"{task_id}:IN_PROGRESS:0%",
        f"{task_id}:IN_PROGRESS:45%",
        f"{task_id}:SUCCESS:100%",
    ]
    assert events[-1].output_urls


@pytest.mark.parametrize(
    ("spec", "flags"),
    [
        ({"aspect_ratio": "2:3"}, " --ar 2:3"),
        ({"size": "1024x768"}, " --ar 4:3"),
        ({"aspect_ratio": "1.5:1"}, " --ar 3:2"),
        ({}, ""),
    ],
)
def test_midjourney_prompt_flags(spec: dict[str, Any], flags: str) -> None:
    provider = midjourney.MidjourneyProvider.from_settings(Settings(_env_file=None), None)
    prompt_spec = PromptSpec(prompt="cat", **spec)
    effective = provider.check_request("midjourney", prompt_spec)
    assert midjourney.imagine_prompt("midjourney", prompt_spec, effective.get("aspect_ratio")) == f"cat{flags}"


@pytest.mark.parametrize(
    ("model", "spec", "field"),
    [("midjourney", {"n": 2}, "n"), ("v5", {}, "model"), ("midjourney", {"seed": -1}, "seed")],
)
def test_midjourney_refuses_what_it_cannot_do(model: str, spec: dict[str, Any], field: str) -> None:
    provider = midjourney.MidjourneyProvider.from_settings(Settings(_env_file=None), None)
    with pytest.raises(InvalidJobRequest) as caught:
        provider.check_request(model, PromptSpec(prompt="x", **spec))
    assert caught.value.field == field


def test_success_without_an_image_is_bad_output() -> None:
    event = midjourney.task_event({"id": "t1", "status": "SUCCESS", "progress": "100%", "imageUrl": None})
    assert (event.status, event.error_type) == ("failed", BAD_OUTPUT)
    event = replicate.prediction_event({"id": "p1", "status": "succeeded", "output": "data:image/png;base64,AAAA"})
    assert (event.status, event.error_type) == ("failed", BAD_OUTPUT)


async def test_scripted_moderation_fails_each_service_its_own_way(
    replicate_provider: ReplicateProvider, mj_provider: MidjourneyProvider, fake: Fake
) -> None:
    fake.script.queue(REPLICATE_CREATE, "moderation")
    fake.script.queue(MIDJOURNEY_IMAGINE, "moderation")

    submitted = await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))
    final = (await poll_until_terminal(lambda: replicate_provider.poll(submitted.provider_job_id)))[-1]
    assert (final.status, final.error_type) == ("failed", CONTENT_POLICY)

    with pytest.raises(ProviderRejected) as caught:
        await mj_provider.submit(call("midjourney", "midjourney"))
    assert caught.value.type == CONTENT_POLICY


async def test_an_html_page_instead_of_json_is_bad_output(replicate_provider: ReplicateProvider, fake: Fake) -> None:
    fake.script.queue(REPLICATE_CREATE, "html")

    with pytest.raises(ProviderRejected) as caught:
        await replicate_provider.submit(call("replicate", "black-forest-labs/flux-schnell"))

    assert caught.value.type == BAD_OUTPUT
