"""Midjourney (midjourney-proxy): imagine tasks, codes, notifyHook callbacks, against the fake."""

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
)
from models.payloads import PromptSpec, ProviderCall
from providers.adapters import midjourney
from providers.adapters.midjourney import MidjourneyProvider
from providers.webhooks import job_webhook_url
from tests.fakes.base import image_bytes
from tests.fakes.midjourney import MIDJOURNEY_FETCH, MIDJOURNEY_IMAGINE
from tests.fakes.server import RecordedRequest, mock_http
from tests.fixtures.async_adapters import (
    MJ_SECRET,
    PNG_SIGNATURE,
    AsyncFake,
    Receiver,
    call,
    fake_settings,
    poll_until_terminal,
    received_hooks,
)
from tests.fixtures.providers import E2E_PROMPT, MIDJOURNEY_SECRET, Case


async def test_midjourney_submit_matches_the_wire_shape(
    mj_provider: MidjourneyProvider, async_fake: AsyncFake, receiver: Receiver
) -> None:
    hook = receiver.hook_url("midjourney", "job-1")
    result = await mj_provider.submit(
        call("midjourney", "v7", hook, size="1920x1080", seed=42, negative_prompt="text, watermark")
    )

    [request] = async_fake.requests("POST", "/mj/submit/imagine")
    assert request.headers["mj-api-secret"] == MJ_SECRET
    assert request.json() == {
        "prompt": "a lighthouse at dusk --ar 16:9 --seed 42 --no text, watermark --v 7",
        "base64Array": [],
        "notifyHook": hook,
        "state": "job-1",
    }
    assert result.provider_job_id in async_fake.state.tasks
    assert result.effective == {"aspect_ratio": "16:9"}


async def test_midjourney_submit_without_hook_or_key(async_fake: AsyncFake, http: httpx.AsyncClient) -> None:
    async_fake.options.midjourney_secret = None
    provider = midjourney.MidjourneyProvider.from_settings(fake_settings(async_fake, MIDJOURNEY_API_KEY=None), http)

    await provider.submit(call("midjourney", "midjourney"))

    [request] = async_fake.requests("POST", "/mj/submit/imagine")
    assert "mj-api-secret" not in request.headers
    assert request.json() == {"prompt": "a lighthouse at dusk", "base64Array": [], "state": "job-1"}


async def test_midjourney_poll_maps_statuses_and_progress(
    mj_provider: MidjourneyProvider, async_fake: AsyncFake, http: httpx.AsyncClient
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
    assert async_fake.requests("GET", f"/mj/task/{submitted.provider_job_id}/fetch")


@pytest.mark.parametrize(
    ("reason", "error_type"),
    [("Banned prompt detected: gore", CONTENT_POLICY), ("Discord interaction failed", JOB_FAILED)],
    ids=["banned", "other"],
)
async def test_midjourney_failed_task_is_classified(
    mj_provider: MidjourneyProvider, async_fake: AsyncFake, reason: str, error_type: str
) -> None:
    async_fake.options.midjourney_fail_reason = reason
    submitted = await mj_provider.submit(call("midjourney", "midjourney"))

    final = (await poll_until_terminal(lambda: mj_provider.poll(submitted.provider_job_id)))[-1]

    assert (final.status, final.error_type) == ("failed", error_type)
    assert final.error is not None and reason in final.error


async def test_midjourney_unknown_task_fails_the_job(mj_provider: MidjourneyProvider, async_fake: AsyncFake) -> None:
    event = await mj_provider.poll("1712205491372999")

    assert (event.status, event.error_type) == ("failed", JOB_FAILED)
    assert event.error is not None and "1712205491372999" in event.error


async def test_midjourney_cancel_is_a_no_op(mj_provider: MidjourneyProvider, async_fake: AsyncFake) -> None:
    await mj_provider.cancel("1712205491372999")
    assert async_fake.recorder.requests == []


async def test_midjourney_banned_prompt_names_the_word(mj_provider: MidjourneyProvider, async_fake: AsyncFake) -> None:
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
    mj_provider: MidjourneyProvider, async_fake: AsyncFake, answer: dict[str, Any], expected: Any
) -> None:
    async_fake.script.queue(MIDJOURNEY_IMAGINE, ("status", 200, answer))
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


async def test_midjourney_http_errors_are_classified(async_fake: AsyncFake, http: httpx.AsyncClient) -> None:
    wrong_key = midjourney.MidjourneyProvider.from_settings(fake_settings(async_fake, MIDJOURNEY_API_KEY="wrong"), http)
    with pytest.raises(ProviderRejected) as caught:
        await wrong_key.submit(call("midjourney", "midjourney"))
    assert caught.value.type == AUTH and "MIDJOURNEY_API_KEY" in caught.value.message

    async_fake.script.queue(MIDJOURNEY_FETCH, ("status", 502, "Bad Gateway", {"retry-after": "3"}))
    provider = midjourney.MidjourneyProvider.from_settings(fake_settings(async_fake), http)
    with pytest.raises(ProviderUnavailable) as unavailable:
        await provider.poll("1712205491372999")
    assert unavailable.value.retry_after == timedelta(seconds=3)


async def test_midjourney_notify_hooks_parse(
    mj_provider: MidjourneyProvider, async_fake: AsyncFake, receiver: Receiver
) -> None:
    hook = receiver.hook_url("midjourney", "job-1")
    submitted = await mj_provider.submit(call("midjourney", "midjourney", hook))

    hooks = await received_hooks(receiver, async_fake)

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


def check_midjourney(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    assert request.headers["mj-api-secret"] == MIDJOURNEY_SECRET
    body = request.json()
    assert body["prompt"] == f"{E2E_PROMPT} --ar 16:9 --seed 42"
    assert body["base64Array"] == []
    job_id = record["jobId"]
    assert body["notifyHook"] == job_webhook_url(settings.WEBHOOK_SECRET, settings.app_url, "midjourney", job_id, 1)
    assert body["state"] == job_id
    assert record["providerJobId"] and record["effective"] == {"aspect_ratio": "16:9"}


# This provider's jobs through the whole product, run by tests/test_providers_e2e.py.
E2E_CASES = [
    Case(
        "midjourney",
        "midjourney",
        {"aspectRatio": "16:9", "seed": 42},
        "POST",
        "/mj/submit/imagine",
        check_midjourney,
        polls="/mj/task/",
    ),
]


async def test_imagine_request_mapping_on_a_mock_transport() -> None:
    png = image_bytes((4, 4), "PNG")
    http, sent = mock_http(lambda request: httpx.Response(200, json={"code": 1, "result": "task-9"}), input_image=png)
    settings = Settings(
        _env_file=None, MIDJOURNEY_BASE_URL="http://mj.test/mj", MIDJOURNEY_API_KEY="s", DOWNLOAD_ALLOWLIST=["img.test"]
    )
    provider = MidjourneyProvider.from_settings(settings, http)
    spec = PromptSpec(
        prompt="a fox", aspect_ratio="16:9", negative_prompt="text", previous_image="http://img.test/a.png"
    )
    call = ProviderCall("job-1", "c", "n", "midjourney", "v7", spec, webhook_url="https://me.test/hook")
    assert (await provider.submit(call)).provider_job_id == "task-9"
    (request,) = sent
    assert str(request.url) == "http://mj.test/mj/submit/imagine" and request.headers["mj-api-secret"] == "s"
    assert json.loads(request.content) == {
        "prompt": "a fox --ar 16:9 --no text --v 7",
        "base64Array": ["data:image/png;base64," + base64.b64encode(png).decode()],
        "state": "job-1",
        "notifyHook": "https://me.test/hook",
    }
