"""Stability: generate, image-to-image, the creative upscaler (submit, resume, poll) and its failures."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
from datetime import timedelta
from typing import Any

import httpx
import pytest
from PIL import Image
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment

from core.config import Settings
from models.errors import (
    CONTENT_POLICY,
    INVALID_REQUEST,
    JOB_FAILED,
    InvalidJobRequest,
    ProviderRejected,
    ProviderUnavailable,
)
from models.payloads import PromptSpec, ProviderCall
from providers.adapters import stability
from tests.fakes.app import FakeProviders
from tests.fakes.base import form_fields, form_files, image_bytes
from tests.fakes.server import RecordedRequest, mock_http
from tests.fakes.stability import (
    STABILITY_GENERATE,
    STABILITY_PENDING_POLLS,
    STABILITY_RESULTS,
    STABILITY_UPSCALE,
    STABILITY_UPSCALE_FACTOR,
)
from tests.fixtures.providers import E2E_PROMPT, STABILITY_KEY, Case, stored_files
from tests.fixtures.stability_adapter import (
    INPUT_SIZE,
    JOB_ID,
    RESULTS_PATH,
    RUNNING_POLLS,
    UPSCALE_PATH,
    UPSCALE_PROMPT,
    RememberingSink,
    Served,
    all_providers,
    input_image,
    payloads_in,
    provider_for,
    stability_call,
)
from tests.fixtures.stack import make_settings, running_stack
from tests.fixtures.sync_adapters import CollectingSink, call_for, generate, settings_for
from tests.helpers import eventually
from worker import generation_activities, worker_resources


async def test_stability_core_sends_multipart_fields_and_reads_the_seed_header(sync_fake, http, sink):
    provider = stability.StabilityProvider.from_settings(settings_for(sync_fake.base_url), http)
    call = call_for(
        "stable-image-core", "stability", size="1200x800", negative_prompt="blurry", seed=1234, style="Anime"
    )

    provenance = await provider.generate(call, sink)

    [request] = sync_fake.recorder.requests
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


async def test_stability_sd3_three_outputs_take_three_calls_with_consecutive_seeds(sync_fake, http, sink):
    provider = stability.StabilityProvider.from_settings(settings_for(sync_fake.base_url), http)
    call = call_for("sd3.5-large-turbo", "stability", aspect_ratio="9:16", negative_prompt="fog", seed=10, n=3)

    provenance = await provider.generate(call, sink)

    assert [request.path for request in sync_fake.recorder.requests] == ["/v2beta/stable-image/generate/sd3"] * 3
    fields = [form_fields(request) for request in sync_fake.recorder.requests]
    assert [f["seed"] for f in fields] == ["10", "11", "12"]
    assert all(f["model"] == "sd3.5-large-turbo" and "negative_prompt" not in f for f in fields)
    assert sink.ways == ["stream"] * 3
    assert provenance.effective["seeds"] == [10, 11, 12]
    assert provenance.effective["ignored"] == ["negativePrompt"]


async def test_stability_429_honours_retry_after_seconds(sync_fake, http, sink):
    body = {"id": "e1", "name": "rate_limit_exceeded", "errors": ["You have exceeded the rate limit"]}
    sync_fake.script.queue(STABILITY_GENERATE, ("status", 429, body, {"retry-after": "7"}))

    with pytest.raises(ProviderUnavailable) as caught:
        await generate(sync_fake, http, sink, "stability")

    assert caught.value.retry_after == timedelta(seconds=7)


async def test_upscale_sends_the_input_image_as_multipart_and_polls_the_results_until_done(
    stability_fake: Served, http: httpx.AsyncClient
) -> None:
    sink = RememberingSink()
    provider = provider_for(stability_fake, http)
    call = stability_call(
        "upscale-creative", previous_image=stability_fake.input_url("photo.png"), seed=7, negative_prompt="blur"
    )

    provenance = await provider.generate(call, sink)

    (submit,) = stability_fake.requests("POST", UPSCALE_PATH)
    assert submit.headers["authorization"] == f"Bearer {STABILITY_KEY}"
    assert submit.headers["accept"] == "application/json"
    assert submit.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert form_fields(submit) == {
        "prompt": UPSCALE_PROMPT,
        "output_format": "png",
        "seed": "7",
        "negative_prompt": "blur",
    }
    image = form_files(submit)["image"]
    assert (image.filename, image.content_type, image.data) == ("input.png", "image/png", input_image("png"))

    (job_id,) = sink.remembered_ids
    assert JOB_ID.match(job_id)
    polls = stability_fake.requests("GET", RESULTS_PATH)
    assert [poll.path for poll in polls] == [f"{RESULTS_PATH}{job_id}"] * (STABILITY_PENDING_POLLS + 1)
    assert all(poll.headers["authorization"] == f"Bearer {STABILITY_KEY}" for poll in polls)
    assert all(poll.headers["accept"] == "image/*" for poll in polls)
    assert len(stability_fake.requests("GET", "/inputs/")) == 1

    upscaled = (INPUT_SIZE[0] * STABILITY_UPSCALE_FACTOR, INPUT_SIZE[1] * STABILITY_UPSCALE_FACTOR)
    assert sink.sizes() == [upscaled]
    assert provenance.provider_job_id == job_id
    assert provenance.seed == 7
    assert provenance.effective == {"n": 1}


async def test_a_retried_attempt_resumes_the_remembered_job_and_never_submits_twice(
    stability_fake: Served, http: httpx.AsyncClient
) -> None:
    provider = provider_for(stability_fake, http, POLL_INTERVAL_SECONDS=0.2)
    call = stability_call("upscale-creative", previous_image=stability_fake.input_url("photo.png"))
    first = RememberingSink()
    # The first attempt dies while it polls (a worker crash); the activity's heartbeat details kept the id.
    attempt = asyncio.create_task(provider.generate(call, first))
    await eventually(lambda: stability_fake.requests("GET", RESULTS_PATH) or attempt.done(), what="the first poll")
    assert not attempt.done(), attempt
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert first.received == [] and first.provider_job_id is not None

    second = RememberingSink(provider_job_id=first.provider_job_id)
    provenance = await provider.generate(call, second)

    assert len(stability_fake.requests("POST", UPSCALE_PATH)) == 1
    assert len(stability_fake.requests("GET", "/inputs/")) == 1  # the resumed attempt does not fetch the input again
    assert second.remembered_ids == []
    assert len(second.received) == 1
    assert provenance.provider_job_id == first.provider_job_id


async def test_a_result_that_is_gone_fails_for_good(stability_fake: Served, http: httpx.AsyncClient) -> None:
    expired = "f" * 64  # e.g. remembered by an attempt more than 24 hours ago
    with pytest.raises(ProviderRejected) as raised:
        await provider_for(stability_fake, http).generate(
            stability_call("upscale-creative", previous_image=stability_fake.input_url("photo.png")),
            RememberingSink(provider_job_id=expired),
        )
    assert raised.value.type == JOB_FAILED and not raised.value.retryable
    assert f"no result for job {expired}" in raised.value.message and "24 hours" in raised.value.message
    assert stability_fake.requests("POST", UPSCALE_PATH) == []


async def test_a_server_error_while_polling_is_retryable_and_keeps_the_job(
    stability_fake: Served, http: httpx.AsyncClient
) -> None:
    broken = {"id": "e1", "name": "internal_error", "errors": ["An unexpected server error occurred"]}
    stability_fake.script.queue(STABILITY_RESULTS, ("status", 503, broken))
    sink = RememberingSink()
    with pytest.raises(ProviderUnavailable, match="Stability answered HTTP 503"):
        await provider_for(stability_fake, http).generate(
            stability_call("upscale-creative", previous_image=stability_fake.input_url("photo.png")), sink
        )
    assert sink.provider_job_id is not None  # the next attempt resumes it


async def test_polling_gives_up_after_the_poll_timeout(stability_fake: Served, http: httpx.AsyncClient) -> None:
    running = ("status", 202, {"id": "x", "status": "in-progress"})
    stability_fake.script.queue(STABILITY_RESULTS, *[running] * 200)
    provider = provider_for(stability_fake, http, POLL_INTERVAL_SECONDS=0.02, POLL_TIMEOUT_SECONDS=0.2)
    with pytest.raises(ProviderUnavailable, match="still running after 0.2 s"):
        await provider.generate(
            stability_call("upscale-creative", previous_image=stability_fake.input_url("photo.png")), RememberingSink()
        )
    assert 3 <= len(stability_fake.requests("GET", RESULTS_PATH)) < 50


async def test_a_filtered_upscale_is_a_content_policy_failure(stability_fake: Served, http: httpx.AsyncClient) -> None:
    stability_fake.script.queue(STABILITY_UPSCALE, "all_filtered")
    sink = RememberingSink()
    with pytest.raises(ProviderRejected) as raised:
        await provider_for(stability_fake, http).generate(
            stability_call("upscale-creative", previous_image=stability_fake.input_url("photo.png")), sink
        )
    assert raised.value.type == CONTENT_POLICY
    assert sink.received == []


@pytest.mark.parametrize(
    ("url", "overrides", "reason"),
    [
        ("http://10.0.0.1/photo.png", {}, "10.0.0.1 resolves to 10.0.0.1, a non-public address"),
        ("http://169.254.169.254/latest/meta-data/x.png", {}, "a non-public address"),
        ("{base}/inputs/photo.png", {"DOWNLOAD_ALLOWLIST": []}, "127.0.0.1, a non-public address"),
        ("{base}/inputs/page.html", {}, "must be one of image/jpeg, image/png, image/webp, not content starting"),
        ("{base}/inputs/photo.gif", {}, "not image/gif"),
        ("{base}/inputs/missing.bmp", {}, "failed: HTTP 404"),
        ("{base}/inputs/photo.png", {"MAX_IMAGE_BYTES": 100}, "larger than the 100 byte limit"),
    ],
    ids=["private", "metadata", "loopback-not-allowlisted", "html", "gif", "missing", "too-large"],
)
async def test_an_unusable_input_image_is_refused_before_stability_is_called(
    url: str, overrides: dict[str, Any], reason: str, stability_fake: Served, http: httpx.AsyncClient
) -> None:
    provider = provider_for(stability_fake, http, **overrides)
    input_url = url.format(base=stability_fake.base_url)
    for model in ("upscale-creative", "sd3.5-large"):
        with pytest.raises(ProviderRejected) as raised:
            await provider.generate(stability_call(model, previous_image=input_url), RememberingSink())
        assert raised.value.type == INVALID_REQUEST and not raised.value.retryable
        assert reason in raised.value.message and input_url in raised.value.message
    assert stability_fake.requests("POST", "/v2beta/") == []
    if "DOWNLOAD_ALLOWLIST" in overrides:
        assert stability_fake.requests("GET", "/inputs/") == []  # refused before connecting


async def test_an_unreachable_input_host_is_retryable(stability_fake: Served, http: httpx.AsyncClient) -> None:
    closed = "http://127.0.0.1:9/photo.png"
    with pytest.raises(ProviderUnavailable, match="Could not download the input image"):
        await provider_for(stability_fake, http).generate(
            stability_call("stable-image-ultra", previous_image=closed), RememberingSink()
        )


async def test_sd3_image_to_image_sends_image_strength_and_mode_on_every_call(
    stability_fake: Served, http: httpx.AsyncClient
) -> None:
    sink = RememberingSink()
    call = stability_call(
        "sd3.5-large",
        previous_image=stability_fake.input_url("photo.jpg"),
        strength=0.3,
        aspect_ratio="16:9",
        seed=10,
        n=2,
    )
    provenance = await provider_for(stability_fake, http).generate(call, sink)

    calls = stability_fake.requests("POST", "/v2beta/stable-image/generate/sd3")
    assert len(calls) == 2 and len(sink.received) == 2
    for index, request in enumerate(calls):
        assert request.headers["authorization"] == f"Bearer {STABILITY_KEY}"
        assert form_fields(request) == {
            "prompt": UPSCALE_PROMPT,
            "output_format": "png",
            "seed": str(10 + index),
            "strength": "0.3",
            "model": "sd3.5-large",
            "mode": "image-to-image",
        }
        image = form_files(request)["image"]
        assert (image.filename, image.content_type, image.data) == ("input.jpg", "image/jpeg", input_image("jpg"))
    assert len(stability_fake.requests("GET", "/inputs/")) == 1  # fetched once for both calls
    assert provenance.effective == {"n": 2, "strength": 0.3, "ignored": ["aspectRatio"], "seeds": [10, 11]}
    assert sink.remembered_ids == []


async def test_ultra_image_to_image_uses_the_default_strength(stability_fake: Served, http: httpx.AsyncClient) -> None:
    call = stability_call("stable-image-ultra", previous_image=stability_fake.input_url("photo.png"), style="anime")
    provenance = await provider_for(stability_fake, http).generate(call, RememberingSink())
    (request,) = stability_fake.requests("POST", "/v2beta/stable-image/generate/ultra")
    fields = form_fields(request)
    assert fields["strength"] == str(stability.DEFAULT_STRENGTH) and fields["style_preset"] == "anime"
    assert "aspect_ratio" not in fields and "mode" not in fields
    assert "image" in form_files(request)
    assert provenance.effective["strength"] == stability.DEFAULT_STRENGTH


@pytest.mark.parametrize(
    ("spec", "field"),
    [({}, "previousImage"), ({"previous_image": "https://x.test/a.png", "n": 2}, "n")],
    ids=["no-input-image", "two-outputs"],
)
def test_upscale_needs_exactly_one_input_image(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidJobRequest) as raised:
        all_providers()["stability"].check_request("upscale-creative", PromptSpec(prompt=UPSCALE_PROMPT, **spec))
    assert raised.value.field == field


def test_upscale_reports_what_it_ignores() -> None:
    spec = PromptSpec(
        prompt=UPSCALE_PROMPT, previous_image="https://x.test/a.png", strength=0.4, size="1024x1024", seed=3
    )
    assert all_providers()["stability"].check_request("upscale-creative", spec) == {
        "n": 1,
        "ignored": ["size", "strength"],
    }


async def test_upscale_end_to_end_keeps_image_bytes_out_of_history(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    input_url = f"{fake_providers.url}/outputs/input.png"
    async with running_stack(provider_settings, temporal_client) as stack:
        started = await stack.start(
            UPSCALE_PROMPT,
            provider="stability",
            model="upscale-creative",
            promptSpec={"previousImage": input_url, "seed": 5},
        )
        record = await stack.wait(started["jobId"])
        node = await stack.node(started["workflowId"], "node-1")
        async with httpx.AsyncClient() as client:
            stored = await client.get(record["imageUrl"])
        history = await temporal_client.get_workflow_handle(record["jobId"]).fetch_history()

    assert record["status"] == "completed", record
    (submit,) = fake_providers.requests("POST", UPSCALE_PATH)
    assert form_files(submit)["image"].content_type == "image/png"
    assert form_fields(submit)["seed"] == "5"
    polls = [poll.path.removeprefix(RESULTS_PATH) for poll in fake_providers.requests("GET", RESULTS_PATH)]
    assert len(polls) == STABILITY_PENDING_POLLS + 1 and len(set(polls)) == 1 and JOB_ID.match(polls[0]), polls
    assert len(fake_providers.requests("GET", "/outputs/input.png")) == 1
    assert record["promptSpec"]["previousImage"] == input_url
    assert record["providerJobId"] == polls[0]  # Stability's job id, for operators
    assert node["data"]["imageUrl"] == record["imageUrl"]
    with Image.open(io.BytesIO(stored.content)) as image:
        assert image.size == (64 * STABILITY_UPSCALE_FACTOR, 64 * STABILITY_UPSCALE_FACTOR)
    assert stored_files(provider_settings, started["workflowId"]) == [
        f"{record['jobId']}.png",
        f"{record['jobId']}.thumb.webp",
    ]
    # Only the URL travels: neither the input nor the result is in the workflow's history.
    recorded = b"".join(payload.data for event in history.events for payload in payloads_in(event))
    png_base64 = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode().rstrip("=")
    assert input_url.encode() in recorded
    assert b"\x89PNG" not in recorded and png_base64.encode() not in recorded


async def test_a_retried_upscale_resumes_polling_through_temporal_without_a_second_submit(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    broken = {"id": "e1", "name": "internal_error", "errors": ["An unexpected server error occurred"]}
    running = ("status", 202, {"id": "x", "status": "in-progress"})
    # Three seconds of polls first, so the attempt's periodic heartbeats run after the id was remembered.
    fake_providers.script.queue(STABILITY_RESULTS, *[running] * RUNNING_POLLS, ("status", 503, broken))
    input_url = f"{fake_providers.url}/outputs/input.png"
    async with running_stack(provider_settings, temporal_client) as stack:
        started = await stack.start(
            UPSCALE_PROMPT, provider="stability", model="upscale-creative", promptSpec={"previousImage": input_url}
        )
        record = await stack.wait(started["jobId"], timeout=40)
        history = await temporal_client.get_workflow_handle(record["jobId"]).fetch_history()

    assert record["status"] == "completed", record
    assert len(fake_providers.requests("POST", UPSCALE_PATH)) == 1
    polls = [poll.path for poll in fake_providers.requests("GET", RESULTS_PATH)]
    assert len(polls) == RUNNING_POLLS + 1 + STABILITY_PENDING_POLLS + 1 and len(set(polls)) == 1, polls
    (attempt,) = [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
        and event.activity_task_started_event_attributes.attempt > 1
    ]
    assert attempt == 2


async def test_the_upscaler_is_listed_with_stability(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    async with running_stack(provider_settings, temporal_client, workers=False) as stack:
        listed = (await stack.api.get("/v1/providers")).json()["items"]
    (item,) = [item for item in listed if item["name"] == "stability"]
    assert "upscale-creative" in item["models"] and "stable-image-core" in item["models"]
    assert "previousImage" in item["description"]


STABILITY_FORM_FIELDS = {
    "prompt",
    "negative_prompt",
    "aspect_ratio",
    "seed",
    "output_format",
    "style_preset",
    "image",
    "strength",
    "model",
    "mode",
    "cfg_scale",
}


def check_stability(request: RecordedRequest, record: dict[str, Any], settings: Settings) -> None:
    assert request.headers["authorization"] == f"Bearer {STABILITY_KEY}"
    assert request.headers["accept"] == "image/*"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    fields = form_fields(request)
    assert set(fields) <= STABILITY_FORM_FIELDS
    assert fields["prompt"] == E2E_PROMPT
    assert fields["negative_prompt"] == "fog"
    assert fields["aspect_ratio"] == "16:9"
    assert fields["seed"] == "42"
    assert fields["output_format"] == "png"
    assert fields["style_preset"] == "cinematic"
    assert record["seed"] == 42


# This provider's jobs through the whole product, run by tests/test_providers_e2e.py.
E2E_CASES = [
    Case(
        "stability",
        "stable-image-core",
        {"size": "1920x1080", "seed": 42, "negativePrompt": "fog", "style": "cinematic"},
        "POST",
        "/v2beta/stable-image/generate/core",
        check_stability,
    ),
]


async def test_the_activity_hands_a_remembered_job_to_the_next_attempt_which_resumes_it(
    stability_fake: Served, stack_settings: Settings
) -> None:
    """Through the real `generate_image` activity (ActivityEnvironment): the first attempt's heartbeat details carry
    the Stability job id; an attempt started with those details polls that job and never submits again."""
    settings = make_settings(
        stack_settings,
        STABILITY_API_KEY=STABILITY_KEY,
        STABILITY_BASE_URL=stability_fake.base_url,
        DOWNLOAD_ALLOWLIST=["127.0.0.1"],
        POLL_INTERVAL_SECONDS=0.05,
        STABILITY_RATE_PER_MINUTE=6000.0,
    )
    call = stability_call("upscale-creative", previous_image=stability_fake.input_url("photo.png"))
    async with worker_resources(settings) as resources:
        activities = generation_activities(settings, resources)
        first = ActivityEnvironment()
        beats: list[Any] = []
        first.on_heartbeat = lambda *details: beats.append(details)
        attempt = asyncio.create_task(first.run(activities.generate_image, call))
        await eventually(lambda: stability_fake.requests("GET", RESULTS_PATH) or attempt.done(), what="the first poll")
        assert not attempt.done(), attempt
        attempt.cancel()
        with pytest.raises(asyncio.CancelledError):
            await attempt
        remembered = [details for details in beats if details]
        assert remembered, "the submitted job id rides on the heartbeats"

        second = ActivityEnvironment()
        second.info = dataclasses.replace(second.info, attempt=2, heartbeat_details=list(remembered[-1]))
        result = await second.run(activities.generate_image, call)

    assert len(stability_fake.requests("POST", UPSCALE_PATH)) == 1
    assert result.provenance.provider_job_id == remembered[-1][0]
    assert len(result.images) == 1


async def test_generate_request_mapping_on_a_mock_transport() -> None:
    png = image_bytes((4, 4), "PNG")

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=png, headers={"content-type": "image/png", "seed": "5"})

    http, sent = mock_http(answer, input_image=png)
    settings = Settings(_env_file=None, STABILITY_API_KEY="sk-s", DOWNLOAD_ALLOWLIST=["img.test"])
    provider = stability.StabilityProvider.from_settings(settings, http)
    spec = PromptSpec(prompt="a fox", previous_image="http://img.test/a.png", strength=0.4, seed=5)
    await provider.generate(ProviderCall("job-1", "c", "n", "stability", "sd3.5-large", spec), CollectingSink(http))
    (request,) = sent
    assert str(request.url) == "https://api.stability.ai/v2beta/stable-image/generate/sd3"
    assert request.headers["authorization"] == "Bearer sk-s" and request.headers["accept"] == "image/*"
    recorded = RecordedRequest("POST", request.url.path, {}, dict(request.headers), request.content)
    assert form_fields(recorded) == {
        "prompt": "a fox",
        "seed": "5",
        "output_format": "png",
        "model": "sd3.5-large",
        "mode": "image-to-image",
        "strength": "0.4",
    }
    assert form_files(recorded)["image"].data == png
