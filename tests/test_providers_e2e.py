"""Every provider through the whole product, on real parts: API -> Temporal workflow -> adapter -> fake provider
over HTTP -> object storage -> canvas node. The fake's recorded requests are checked against PROVIDERS.md."""

from __future__ import annotations

import asyncio
import base64
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import ActivityTaskStartedEventAttributes, HistoryEvent
from temporalio.client import Client

from core.config import Settings
from providers.registry import build_providers
from tests.fakes.app import FakeProviders
from tests.fakes.async_base import OUTPUTS
from tests.fakes.base import form_files
from tests.fakes.openai import OPENAI
from tests.fakes.pollinations import POLLINATIONS
from tests.fakes.server import RecordedRequest
from tests.fakes.stability import STABILITY_GENERATE
from tests.fixtures.providers import (
    ONE_PARTITION,
    Case,
    dedicated_temporal,
    stored_files,
    temporal_address_of,
)
from tests.fixtures.stack import Stack, make_settings, running_stack, running_workers
from tests.sse import read_events

PROMPT = "a lighthouse at dusk"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")


async def fetch_image(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        response = await http.get(url)
    assert response.status_code == 200, url
    assert response.headers["content-type"] in IMAGE_TYPES
    return response


def registry_cases() -> list[Case]:
    """Every provider's E2E_CASES, found by the registry's names: a provider added to the registry is run here
    without this file changing, and one without its test module fails the check below."""
    cases: list[Case] = []
    for name in build_providers(Settings(_env_file=None)):
        module = importlib.import_module(f"tests.providers.test_{name}")
        cases += module.E2E_CASES
    return cases


def test_every_provider_has_its_test_module_its_fake_and_an_end_to_end_case() -> None:
    fakes = Path(__file__).parent / "fakes"
    for name in build_providers(Settings(_env_file=None)):
        module = importlib.import_module(f"tests.providers.test_{name}")
        assert [case.provider for case in module.E2E_CASES] and {case.provider for case in module.E2E_CASES} == {name}
        assert name == "local" or (fakes / f"{name}.py").exists(), f"tests/fakes/{name}.py is missing"


@pytest.mark.parametrize("case", registry_cases(), ids=lambda case: f"{case.provider}-{case.model}")
async def test_each_provider_end_to_end(
    case: Case, provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    settings = make_settings(provider_settings, **case.settings)
    async with running_stack(settings, temporal_client) as stack:
        started = await stack.start(PROMPT, provider=case.provider, model=case.model, promptSpec=case.spec)
        record = await stack.wait(started["jobId"])
        node = await stack.node(started["workflowId"], "node-1")
        if record["imageUrl"]:
            await fetch_image(record["imageUrl"])

    assert record["status"] == "completed", record
    if case.method and case.path and case.check:
        calls = fake_providers.requests(case.method, case.path)
        assert len(calls) == 1, [request.path for request in fake_providers.recorder.requests]
        case.check(calls[0], record, settings)
    if case.polls:
        assert fake_providers.requests("GET", case.polls) == []

    prefix = f"{settings.app_url}/files/images/{started['workflowId']}/{record['jobId']}."
    assert record["imageUrl"].startswith(prefix)
    assert record["imageUrls"] == [record["imageUrl"]]
    assert node["data"]["status"] == "completed"
    assert node["data"]["imageUrl"] == record["imageUrl"]
    assert node["data"]["jobId"] == record["jobId"]
    images = stored_files(settings, started["workflowId"])
    assert images == [record["imageUrl"].rsplit("/", 1)[1], f"{record['jobId']}.thumb.webp"]


async def test_429_retry_hint_is_waited_for_then_the_job_succeeds(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    # The policy's own first backoff is 2 s; a 3 s hint shows the provider's hint is what counts.
    throttled = {
        "error": {
            "message": "Rate limit reached for images per minute.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    fake_providers.script.queue(OPENAI, ("status", 429, throttled, {"retry-after": "3"}))
    async with running_stack(provider_settings, temporal_client) as stack:
        started = await stack.start(PROMPT, provider="openai", model="gpt-image-2.5-flare")
        record = await stack.wait(started["jobId"])
    assert record["status"] == "completed", record
    first, second = fake_providers.requests("POST", "/v1/images/generations")
    assert second.at - first.at >= 3.0


async def test_moderation_fails_on_the_first_attempt_with_the_providers_reason(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.script.queue(OPENAI, "moderation")
    failed = await run_failing_job(provider_settings, temporal_client, provider="openai", model="gpt-image-2.5-flare")

    assert failed.error["code"] == "ContentPolicyViolation"
    assert "moderation_blocked" in failed.error["message"]
    assert "rejected by the safety system" in failed.error["message"]
    assert len(fake_providers.requests("POST", "/v1/images/generations")) == 1
    (attempt,) = provider_attempts(await history_events(temporal_client, failed.job_id))
    assert attempt.attempt == 1


async def test_three_server_errors_exhaust_the_retry_budget_and_store_nothing(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    broken = {"id": "e1", "name": "internal_error", "errors": ["An unexpected server error occurred"]}
    fake_providers.script.queue(STABILITY_GENERATE, *[("status", 500, broken)] * 3)
    failed = await run_failing_job(provider_settings, temporal_client, provider="stability", model="stable-image-core")

    assert failed.error["code"] == "ProviderUnavailable"
    assert "Stability answered HTTP 500" in failed.error["message"]
    assert "An unexpected server error occurred" in failed.error["message"]
    attempts = fake_providers.requests("POST", "/v2beta/stable-image/generate/")
    assert len(attempts) == 3
    assert attempts[1].at - attempts[0].at >= 2.0 and attempts[2].at - attempts[1].at >= 4.0
    assert [started.attempt for started in provider_attempts(await history_events(temporal_client, failed.job_id))] == [
        3
    ]
    assert stored_files(provider_settings, failed.canvas_id) == []


def openai_url_answer(url: str) -> tuple[Any, ...]:
    return ("status", 200, {"created": int(time.time()), "data": [{"url": url}]})


@pytest.mark.parametrize(
    "result_url",
    ["http://10.0.0.1/images/out.png", "http://169.254.169.254/latest/meta-data/out.png"],
    ids=["private", "metadata"],
)
async def test_result_urls_on_private_addresses_are_refused(
    result_url: str, provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.script.queue(OPENAI, openai_url_answer(result_url))
    failed = await run_failing_job(provider_settings, temporal_client, provider="openai", model="gpt-image-2.5-flare")
    assert failed.error["code"] == "InvalidProviderOutput"
    assert "non-public address" in failed.error["message"]
    assert stored_files(provider_settings, failed.canvas_id) == []


async def test_loopback_result_url_is_refused_unless_allowlisted(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    settings = make_settings(provider_settings, DOWNLOAD_ALLOWLIST=[])
    fake_providers.script.queue(OPENAI, openai_url_answer(f"{fake_providers.url}/files/out.png"))
    failed = await run_failing_job(settings, temporal_client, provider="openai", model="gpt-image-2.5-flare")
    assert failed.error["code"] == "InvalidProviderOutput"
    assert "127.0.0.1" in failed.error["message"] and "DOWNLOAD_ALLOWLIST" in failed.error["message"]
    assert fake_providers.requests("GET", "/files/") == []  # refused before connecting
    assert stored_files(settings, failed.canvas_id) == []


async def test_an_html_result_is_refused(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.script.queue(OUTPUTS, "html")
    failed = await run_failing_job(provider_settings, temporal_client, provider="replicate")
    assert failed.error["code"] == "InvalidProviderOutput"
    assert "expected a PNG, JPEG, WebP or GIF image" in failed.error["message"]
    assert len(fake_providers.requests("GET", "/outputs/")) == 1
    assert stored_files(provider_settings, failed.canvas_id) == []


async def test_an_oversized_image_is_refused_before_it_is_all_read(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    limit, body_size = 256 * 1024, 8 * 1024 * 1024
    fake_providers.script.oversized_bytes = body_size
    fake_providers.script.queue(POLLINATIONS, "oversized")
    settings = make_settings(provider_settings, MAX_IMAGE_BYTES=limit)
    failed = await run_failing_job(settings, temporal_client, provider="pollinations")
    assert failed.error["code"] == "InvalidProviderOutput"
    assert f"larger than the {limit} byte limit" in failed.error["message"]
    (answer,) = fake_providers.app.sent_for("/prompt/")
    assert not answer.complete and answer.body_bytes < body_size, answer
    assert stored_files(settings, failed.canvas_id) == []


@dataclass
class FailedJob:
    job_id: str
    canvas_id: str
    error: dict[str, str]


async def run_failing_job(settings: Settings, client: Client, **fields: Any) -> FailedJob:
    """Run one job that must fail; its node must show the run's error message."""
    async with running_stack(settings, client) as stack:
        started = await stack.start(PROMPT, **fields)
        record = await stack.wait(started["jobId"], timeout=40)
        # The run is marked failed first, then the node: wait for both.
        node = await settled_node(stack, started["workflowId"])
    assert record["status"] == "failed", record
    assert node["data"]["status"] == "error"
    assert node["data"]["error"] == record["error"]
    error = {"code": record["errorCode"], "message": record["error"]}
    return FailedJob(job_id=record["jobId"], canvas_id=started["workflowId"], error=error)


NODE_ENDED = ("completed", "error")  # a node's statuses that show its job's end (the spec's updateReactFlowNode)


async def settled_node(stack: Stack, canvas_id: str, node_id: str = "node-1") -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while (node := await stack.node(canvas_id, node_id))["data"]["status"] not in NODE_ENDED:
        assert time.monotonic() < deadline, node
        await asyncio.sleep(0.05)
    return node


async def history_events(client: Client, job_id: str) -> list[HistoryEvent]:
    return list((await client.get_workflow_handle(job_id).fetch_history()).events)


def provider_attempts(events: list[HistoryEvent]) -> list[ActivityTaskStartedEventAttributes]:
    """The started events of the provider call; Temporal records only the last attempt of a retried activity."""
    scheduled = {
        event.event_id
        for event in events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and event.activity_task_scheduled_event_attributes.activity_type.name == "generate_image"
    }
    return [
        event.activity_task_started_event_attributes
        for event in events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and event.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]


async def test_three_outputs_are_stored_and_listed_on_the_node(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    async with running_stack(provider_settings, temporal_client) as stack:
        started = await stack.start(PROMPT, provider="openai", model="gpt-image-2.5-flare", promptSpec={"n": 3})
        record = await stack.wait(started["jobId"])
        node = await stack.node(started["workflowId"], "node-1")
        for url in record["imageUrls"]:
            await fetch_image(url)

    assert record["status"] == "completed", record
    job_id = record["jobId"]
    base = f"{provider_settings.app_url}/files/images/{started['workflowId']}/{job_id}"
    assert record["imageUrls"] == [f"{base}-{index}.png" for index in range(3)]
    assert record["imageUrl"] == record["imageUrls"][0]
    assert node["data"]["imageUrls"] == record["imageUrls"]
    assert node["data"]["imageUrl"] == record["imageUrl"]
    images = [f"{job_id}-{index}.png" for index in range(3)]
    thumbnails = [f"{job_id}-{index}.thumb.webp" for index in range(3)]
    assert stored_files(provider_settings, started["workflowId"]) == sorted(images + thumbnails)
    assert len(fake_providers.requests("POST", "/v1/images/generations")) == 1


async def test_a_provider_rate_limit_holds_across_two_workers(
    provider_settings: Settings, fake_providers: FakeProviders
) -> None:
    # Temporal's queue limit alone lets a burst through: its token bucket starts full (and is refilled once when
    # the first poller sets the rate), so at 2/s the first calls go tens of milliseconds apart and ten span about
    # 3.5 s. The shared pacing (store/pacing.py) gives every call its own half-second slot, whichever worker makes
    # it. One partition, so that Temporal's own spacing is one steady bucket and the span shows what the pacing
    # adds (with the default four, each partition's bucket lets calls through in lumps of its own).
    async with dedicated_temporal(dynamic_config=ONE_PARTITION) as temporal:
        address = temporal_address_of(temporal)
        settings = make_settings(provider_settings, OPENAI_RATE_PER_MINUTE=120, TEMPORAL_ADDRESS=address)  # 2/s
        second_client = await Client.connect(address, identity="second-worker")
        async with running_stack(settings, temporal.client) as stack, running_workers(second_client, settings):
            started = await asyncio.gather(
                *(
                    stack.start(f"picture {index}", provider="openai", model="gpt-image-2.5-flare")
                    for index in range(10)
                )
            )
            records = [await stack.wait(job["jobId"], timeout=60) for job in started]
        identities = {await provider_worker_identity(temporal.client, job["jobId"]) for job in started}

    assert [record["status"] for record in records] == ["completed"] * 10
    assert len(identities) == 2, identities  # both workers took provider calls
    times = sorted(call.at for call in fake_providers.requests("POST", "/v1/images/generations"))
    offsets = [round(at - times[0], 2) for at in times]
    assert len(times) == 10, offsets
    assert times[-1] - times[0] >= 4.0, offsets
    # Slots are exactly 0.5 s apart; a request reaches the fake up to a few tens of milliseconds after its slot,
    # as the API, both workers and the fake share this test's event loop while ten jobs start.
    assert min(later - earlier for earlier, later in pairwise(times)) >= 0.4, offsets


async def provider_worker_identity(client: Client, job_id: str) -> str:
    (started,) = provider_attempts(await history_events(client, job_id))
    return started.identity


async def test_providers_are_listed_with_their_state(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    async with running_stack(provider_settings, temporal_client, workers=False) as stack:
        listed = (await stack.api.get("/v1/providers")).json()["items"]
    by_name = {item["name"]: item for item in listed}
    assert set(by_name) == {
        "local",
        "openai",
        "google",
        "stability",
        "midjourney",
        "replicate",
        "pollinations",
        "custom",
    }
    for item in listed:
        assert item["enabled"] is True and item["disabledReason"] is None, item
        assert item["defaultModel"] in item["models"]
    assert {name for name, item in by_name.items() if item["mode"] == "async"} == {"midjourney", "replicate", "custom"}
    assert {name for name, item in by_name.items() if item["webhooks"]} == {"midjourney", "replicate", "custom"}
    assert "gpt-image-2.5-flare" in by_name["openai"]["models"] and "dall-e-3" not in by_name["openai"]["models"]
    assert by_name["openai"]["rateLimitPerMinute"] == provider_settings.OPENAI_RATE_PER_MINUTE
    assert by_name["google"]["rateLimitPerMinute"] == provider_settings.GOOGLE_RATE_PER_MINUTE
    takes_input_images = {name: item["inputImageModels"] for name, item in by_name.items() if item["inputImageModels"]}
    assert takes_input_images == {
        "local": ["procedural"],
        "openai": [
            "gpt-image-2.5-flare",
            "gpt-image-2.5-sunburst",
            "gpt-image-2.6-flare",
            "gpt-image-2.6-sunburst",
            "gpt-image-2",
        ],
        "stability": ["stable-image-ultra", "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "upscale-creative"],
        "google": ["gemini-3.1-flash-image", "gemini-3-pro-image"],
        "midjourney": ["midjourney", "v6", "v6.1", "v7"],
        "replicate": ["black-forest-labs/flux-kontext-pro", "black-forest-labs/flux-kontext-max", "stability-ai/sdxl"],
        "custom": ["default"],
    }
    gpt_image = {item["model"]: item for item in by_name["openai"]["modelCapabilities"]}["gpt-image-2.5-flare"]
    assert gpt_image | {"shutdownOn": None, "replacement": None} == {
        "shutdownOn": None,
        "replacement": None,
        "model": "gpt-image-2.5-flare",
        "inputImage": True,
        "inputImageRequired": False,
        "maxImages": 10,
        "seed": False,
        "negativePrompt": False,
        "sizes": ["1024x1024", "1536x1024", "1024x1536"],
        "lifecycle": "active",
        "priceUsd": 0.053,
        "source": "catalog",
    }
    upscaler = {item["model"]: item for item in by_name["stability"]["modelCapabilities"]}["upscale-creative"]
    assert (upscaler["inputImageRequired"], upscaler["maxImages"]) == (True, 1)


async def test_a_disabled_provider_says_why_and_refuses_jobs(
    stack_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, POLLINATIONS_ENABLED=False)
    async with running_stack(settings, temporal_client, workers=False) as stack:
        by_name = {item["name"]: item for item in (await stack.api.get("/v1/providers")).json()["items"]}
        refused = await stack.api.post(
            "/v1/jobs",
            json={"workflowId": "c1", "nodeId": "n1", "provider": "openai", "promptSpec": {"basePrompt": PROMPT}},
        )
    assert by_name["local"]["enabled"] is True
    for name, setting in [
        ("openai", "OPENAI_API_KEY"),
        ("replicate", "REPLICATE_API_TOKEN"),
        ("pollinations", "POLLINATIONS_ENABLED"),
    ]:
        assert by_name[name]["enabled"] is False
        assert setting in by_name[name]["disabledReason"]
    assert refused.status_code == 400
    assert refused.json()["code"] == "provider_disabled"
    assert "OPENAI_API_KEY" in refused.json()["message"]
    assert fake_providers.recorder.requests == []


async def test_more_images_than_the_model_makes_are_refused_before_any_call(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    async with running_stack(provider_settings, temporal_client, workers=False) as stack:
        body = {
            "workflowId": "canvas-n2",
            "nodeId": "n1",
            "provider": "google",
            "model": "gemini-3.1-flash-image",
            "promptSpec": {"basePrompt": PROMPT, "n": 5},
        }
        refused = await stack.api.post("/v1/jobs", json=body)
        jobs = (await stack.api.get("/v1/jobs", params={"workflowId": "canvas-n2"})).json()["items"]
    assert refused.status_code == 422
    assert refused.json()["code"] == "unsupported_request"
    assert refused.json()["details"] == [{"field": "promptSpec.n", "message": refused.json()["message"]}]
    assert "n=5" in refused.json()["message"]
    assert jobs == []
    assert fake_providers.recorder.requests == []


def data_uri_bytes(uri: str) -> bytes:
    header, _, encoded = uri.partition(",")
    assert header.startswith("data:image/") and header.endswith(";base64"), header
    return base64.b64decode(encoded)


def sent_openai_image(request: RecordedRequest) -> bytes:
    return form_files(request)["image"].data


def sent_gemini_image(request: RecordedRequest) -> bytes:
    text, image = request.json()["contents"][0]["parts"]
    assert text == {"text": PROMPT}
    return base64.b64decode(image["inlineData"]["data"])


def sent_stability_image(request: RecordedRequest) -> bytes:
    return form_files(request)["image"].data


def sent_replicate_image(request: RecordedRequest) -> bytes:
    inputs = request.json()["input"]
    assert inputs["aspect_ratio"] == "match_input_image"
    return data_uri_bytes(inputs["input_image"])


def sent_midjourney_image(request: RecordedRequest) -> bytes:
    (image,) = request.json()["base64Array"]
    return data_uri_bytes(image)


EDITS = [
    ("openai", "gpt-image-2.5-flare", "POST", "/v1/images/edits", sent_openai_image),
    ("google", "gemini-3.1-flash-image", "POST", "/v1beta/models/gemini-3.1-flash-image:", sent_gemini_image),
    ("stability", "stable-image-ultra", "POST", "/v2beta/stable-image/generate/ultra", sent_stability_image),
    (
        "replicate",
        "black-forest-labs/flux-kontext-pro",
        "POST",
        "/replicate/v1/models/black-forest-labs/flux-kontext-pro/predictions",
        sent_replicate_image,
    ),
    ("midjourney", "midjourney", "POST", "/mj/submit/imagine", sent_midjourney_image),
]


@pytest.mark.parametrize(
    ("provider", "model", "method", "path", "sent_image"), EDITS, ids=[f"{edit[0]}-{edit[1]}" for edit in EDITS]
)
async def test_each_editing_model_receives_exactly_the_previous_images_bytes(
    provider: str,
    model: str,
    method: str,
    path: str,
    sent_image: Callable[[RecordedRequest], bytes],
    provider_settings: Settings,
    fake_providers: FakeProviders,
    temporal_client: Client,
) -> None:
    async with running_stack(provider_settings, temporal_client) as stack:
        source = await stack.wait((await stack.start(PROMPT, provider="local"))["jobId"])
        source_bytes = (await fetch_image(source["imageUrl"])).content
        started = await stack.start(
            PROMPT, provider=provider, model=model, nodeId="node-2", promptSpec={"previousImage": source["imageUrl"]}
        )
        record = await stack.wait(started["jobId"])

    assert record["status"] == "completed", record
    (call,) = fake_providers.requests(method, path)
    assert sent_image(call) == source_bytes


async def test_a_retry_is_said_on_the_job_and_its_node_until_the_next_attempt_goes_on(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    broken = {"id": "e1", "name": "internal_error", "errors": ["An unexpected server error occurred"]}
    fake_providers.script.queue(STABILITY_GENERATE, ("status", 500, broken))
    async with running_stack(provider_settings, temporal_client) as stack:
        started = await stack.start(PROMPT, provider="stability", model="stable-image-core")
        deadline = time.monotonic() + 10
        while "retry" not in (node := await stack.node(started["workflowId"], "node-1"))["data"]:
            assert time.monotonic() < deadline, node  # the policy waits 2 s before the next attempt
            await asyncio.sleep(0.05)
        record = await stack.wait(started["jobId"])
        settled = await settled_node(stack, started["workflowId"])
        async with stack.api.stream("GET", f"/v1/jobs/{started['jobId']}/events") as stream:
            events = [event.json() async for event in read_events(stream)]
    note = "Attempt 1 of 3 failed: Stability answered HTTP 500"
    assert node["data"]["retry"].startswith(note) and node["data"]["retry"].endswith("; trying again."), node
    assert record["status"] == "completed" and "retry" not in settled["data"]  # the next attempt's writes clear it
    (retried,) = [event for event in events if event.get("data", {}).get("moment") == "retry"]
    assert (retried["kind"], retried["message"]) == ("log", node["data"]["retry"])
