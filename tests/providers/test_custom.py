"""The `custom` provider: request mapping (MockTransport), events, signatures, and whole jobs against the
reference server of examples/ over real sockets (by signed webhook, refused forgeries, and by polling)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from core.config import Settings
from models.errors import WebhookRejected
from models.payloads import PromptSpec, ProviderCall
from providers.adapters.custom import INLINE_RESULT, CustomProvider, status_event
from providers.webhooks import job_webhook_url
from tests.fakes.custom import CUSTOM_WEBHOOK_SECRET, RecordingApp, custom_fake
from tests.fakes.server import RecordedRequest, serve
from tests.fixtures.providers import Case, stored_files
from tests.fixtures.stack import Stack, make_settings, running_stack
from tests.helpers import eventually

PROMPT = "a lighthouse at dusk"
POLL_QUICKLY = {"WEBHOOK_GRACE_SECONDS": 0.5, "POLL_INTERVAL_SECONDS": 0.3}


def provider_with(handler: Any, **settings: Any) -> CustomProvider:
    values = {"CUSTOM_PROVIDER_URL": "http://custom.test", "CUSTOM_PROVIDER_MODELS": "sdxl,flux"} | settings
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return CustomProvider.from_settings(Settings(_env_file=None, **values), http)


def signed(body: bytes, secret: str = CUSTOM_WEBHOOK_SECRET) -> dict[str, str]:
    return {"webhook-signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


async def test_submit_sends_the_spec_in_its_own_names_and_asks_for_a_webhook_only_when_it_can_verify_one() -> None:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(202, json={"job_id": "srv-1", "status": "pending"})

    spec = PromptSpec(prompt=PROMPT, negative_prompt="fog", seed=7, previous_image="https://img.test/a.png")
    call = ProviderCall("job-1", "canvas-1", "node-1", "custom", "flux", spec, webhook_url="https://me.test/hook")
    signing = provider_with(answer, CUSTOM_PROVIDER_API_KEY="key-1", CUSTOM_PROVIDER_WEBHOOK_SECRET="s")
    unsigned = provider_with(answer)

    assert (await signing.submit(call)).provider_job_id == "srv-1"
    await unsigned.submit(call)

    first, second = (json.loads(request.content) for request in sent)
    assert sent[0].url == "http://custom.test/jobs" and sent[0].headers["authorization"] == "Bearer key-1"
    assert first == {
        "jobId": "job-1",
        "workflowId": "canvas-1",
        "nodeId": "node-1",
        "model": "flux",
        "promptSpec": {
            "basePrompt": PROMPT,
            "negativePrompt": "fog",
            "seed": 7,
            "previousImage": "https://img.test/a.png",
            "n": 1,
            "styleModifiers": [],
        },
        "webhookUrl": "https://me.test/hook",
    }
    assert "webhookUrl" not in second and "authorization" not in sent[1].headers


def test_models_come_from_settings_and_a_missing_url_disables_the_provider() -> None:
    provider = provider_with(lambda request: httpx.Response(500))
    assert provider.info().models == ("sdxl", "flux") and provider.default_model == "sdxl"
    assert provider.accepts_model("flux") and not provider.accepts_model("dall-e-3")
    unset = CustomProvider.from_settings(Settings(_env_file=None), None)
    assert unset.disabled_reason() == "CUSTOM_PROVIDER_URL is not set"


def test_status_events_keep_inline_images_out_of_the_event() -> None:
    encoded = base64.b64encode(b"\x89PNG-bytes").decode()
    event = status_event(
        {"job_id": "srv-1", "status": "completed", "images": [{"url": "https://cdn.test/1.png"}, {"b64_json": encoded}]}
    )
    assert event.status == "succeeded"
    assert event.output_urls == ["https://cdn.test/1.png", f"{INLINE_RESULT}srv-1/1"]
    assert encoded not in json.dumps(event.output_urls)
    failed = status_event({"job_id": "srv-1", "status": "failed", "error": "CUDA out of memory"})
    assert (failed.status, failed.error) == ("failed", "the custom server failed the job: CUDA out of memory")
    running = status_event({"job_id": "srv-1", "status": "running", "progress": 40})
    assert (running.status, running.progress) == ("running", 40.0)


def test_webhooks_are_verified_with_the_hex_hmac_of_the_body() -> None:
    provider = provider_with(lambda request: httpx.Response(500), CUSTOM_PROVIDER_WEBHOOK_SECRET=CUSTOM_WEBHOOK_SECRET)
    body = json.dumps({"type": "image.generation.status", "data": {"job_id": "srv-1", "status": "running"}}).encode()
    provider.verify_webhook("job-1", signed(body), body)
    assert provider.parse_webhook(body).provenance.provider_job_id == "srv-1"
    with pytest.raises(WebhookRejected):
        provider.verify_webhook("job-1", signed(body, secret="forged"), body)
    with pytest.raises(WebhookRejected):
        provider.verify_webhook("job-1", signed(body), body + b" ")


async def test_a_job_completes_by_signed_webhook_without_a_single_poll(
    provider_settings: Settings, temporal_client: Client
) -> None:
    server = custom_fake()
    async with serve(server) as url:
        settings = make_settings(
            provider_settings, CUSTOM_PROVIDER_URL=url, CUSTOM_PROVIDER_WEBHOOK_SECRET=CUSTOM_WEBHOOK_SECRET
        )
        async with running_stack(settings, temporal_client) as stack:
            started = await stack.start(PROMPT, provider="custom")
            record = await stack.wait(started["jobId"])
            image = await stack.api.get(record["imageUrl"])

    assert record["status"] == "completed", record
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    (submit,) = server.requests("POST", "/jobs")
    assert submit.json()["webhookUrl"] == job_webhook_url(
        settings.WEBHOOK_SECRET, settings.app_url, "custom", record["jobId"], 1
    )
    assert server.requests("GET", "/jobs/") == []
    assert len(server.requests("GET", f"/images/{record['providerJobId']}.png")) == 1


async def test_a_forged_webhook_gets_401_and_the_job_still_completes(
    provider_settings: Settings, temporal_client: Client
) -> None:
    server = custom_fake(step_seconds=1.0)
    async with serve(server) as url:
        settings = make_settings(
            provider_settings, CUSTOM_PROVIDER_URL=url, CUSTOM_PROVIDER_WEBHOOK_SECRET=CUSTOM_WEBHOOK_SECRET
        )
        async with running_stack(settings, temporal_client) as stack:
            started = await stack.start(PROMPT, provider="custom")
            await wait_until_submitted(server)
            (submit,) = server.requests("POST", "/jobs")
            hook = submit.json()["webhookUrl"]
            provider_job_id = await recorded_provider_job(stack, started["jobId"])
            forged_body = json.dumps(
                {"job_id": provider_job_id, "status": "completed", "images": [{"url": "https://evil.test/x.png"}]}
            ).encode()
            forged = await stack.api.post(hook, content=forged_body, headers=signed(forged_body, secret="guessed"))
            record = await stack.wait(started["jobId"])

    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_webhook_signature")
    assert record["status"] == "completed" and "evil.test" not in json.dumps(record)


async def wait_until_submitted(server: RecordingApp, timeout: float = 20) -> None:
    """Until the job's submit has reached the server (a job is `running` from before its provider call)."""
    await eventually(lambda: server.requests("POST", "/jobs"), what="the job's submit", timeout=timeout)


async def test_without_webhooks_the_job_completes_by_polling_and_inline_images_are_stored(
    provider_settings: Settings, temporal_client: Client
) -> None:
    server: RecordingApp = custom_fake(webhooks=False, inline_images=True)
    async with serve(server) as url:
        settings = make_settings(
            provider_settings, CUSTOM_PROVIDER_URL=url, CUSTOM_PROVIDER_WEBHOOK_SECRET=None, **POLL_QUICKLY
        )
        async with running_stack(settings, temporal_client) as stack:
            started = await stack.start(PROMPT, provider="custom")
            record = await stack.wait(started["jobId"])

    assert record["status"] == "completed", record
    (submit,) = server.requests("POST", "/jobs")
    assert "webhookUrl" not in submit.json()
    polls = server.requests("GET", "/jobs/")
    # At least one poll found it running or done, and the store step read the inline image once more.
    assert len(polls) >= 2
    assert record["imageUrl"].rsplit("/", 1)[1] in stored_files(settings, started["workflowId"])


def check_custom(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    body = request.json()
    assert body["promptSpec"] == {"basePrompt": PROMPT, "seed": 42, "n": 1, "styleModifiers": []}
    assert body["webhookUrl"] == job_webhook_url(
        settings.WEBHOOK_SECRET, settings.app_url, "custom", record["jobId"], 1
    )
    assert (body["jobId"], body["model"]) == (record["jobId"], "default")


E2E_CASES = [Case("custom", "default", {"seed": 42}, "POST", "/custom/jobs", check_custom, polls="/custom/jobs/")]


async def recorded_provider_job(stack: Stack, job_id: str) -> str:
    """The provider's job id, once the job has recorded it (the submit reaches the server a moment before)."""

    async def provider_job() -> str | None:
        return (await stack.job(job_id)).get("providerJobId")

    return str(await eventually(provider_job, what=f"job {job_id} to record its provider job", timeout=5))
