"""Input images and Stability's asynchronous creative upscaler, over real sockets.

Adapter tests run against the fake Stability endpoints (tests/fakes/sync_providers.py) next to a small server of
input images; the end-to-end tests go through the API, Temporal, the worker and storage. Requests are checked
against docs/providers.md: multipart `image` part, bearer key, the results path polled until it says 200.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from google.protobuf.message import Message as ProtoMessage
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from core.config import Settings
from models.errors import (
    CONTENT_POLICY,
    INVALID_REQUEST,
    JOB_FAILED,
    InvalidJobRequest,
    ProviderRejected,
    ProviderUnavailable,
)
from models.payloads import PromptSpec, ProviderCall, StoredImage
from providers import stability
from providers.registry import build_providers
from tests.fakes.app import FakeProviders
from tests.fakes.script import Script
from tests.fakes.server import RecordedRequest, Recorder, serve
from tests.fakes.sync_providers import (
    STABILITY_PENDING_POLLS,
    STABILITY_RESULTS,
    STABILITY_UPSCALE,
    STABILITY_UPSCALE_FACTOR,
    form_fields,
    form_files,
    image_bytes,
    sync_routes,
)
from tests.fixtures.providers import STABILITY_KEY, stored_files
from tests.fixtures.stack import running_stack

UPSCALE_PATH = "/v2beta/stable-image/upscale/creative"
RESULTS_PATH = "/v2beta/results/"
JOB_ID = re.compile(r"^[0-9a-f]{64}$")
INPUT_SIZE = (96, 64)
INPUT_FORMATS = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg"), "gif": ("GIF", "image/gif")}
PROMPT = "a lighthouse at dusk"
RUNNING_POLLS = 6


@dataclass
class Served:
    """The fake Stability endpoints and an input image server, on one port."""

    base_url: str
    recorder: Recorder
    script: Script

    def requests(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [r for r in self.recorder.requests if r.method == method and r.path.startswith(path_prefix)]

    def input_url(self, name: str) -> str:
        return f"{self.base_url}/inputs/{name}"


def input_image(extension: str) -> bytes:
    pillow_format, _ = INPUT_FORMATS[extension]
    return image_bytes(INPUT_SIZE, pillow_format)


def input_routes(recorder: Recorder) -> list[Route]:
    """/inputs/{name}.{png,jpg,gif} serve real images of INPUT_SIZE; /inputs/page.html a web page."""

    async def serve_input(request: Request) -> Response:
        recorder.requests.append(RecordedRequest("GET", request.url.path, {}, dict(request.headers), b""))
        extension = request.path_params["name"].rpartition(".")[2]
        if extension == "html":
            return HTMLResponse("<!DOCTYPE html><html><body>Sign in to see this image</body></html>")
        if extension not in INPUT_FORMATS:
            return Response("not found", 404)
        return Response(input_image(extension), media_type=INPUT_FORMATS[extension][1])

    return [Route("/inputs/{name}", serve_input, methods=["GET"])]


@dataclass
class RememberingSink:
    """Keeps what the adapter stores and the provider job id it remembers, as the activity's sink does."""

    provider_job_id: str | None = None
    received: list[bytes] = field(default_factory=list)
    remembered_ids: list[str] = field(default_factory=list)

    async def store_stream(self, chunks: AsyncIterable[bytes]) -> StoredImage:
        return self._keep(b"".join([chunk async for chunk in chunks]))

    async def store_bytes(self, data: bytes) -> StoredImage:
        return self._keep(data)

    async def store_url(self, url: str) -> StoredImage:
        raise AssertionError("Stability answers with the image itself, never with a URL")

    async def progress(self, fraction: float, message: str | None = None) -> None:
        return None

    def remember(self, provider_job_id: str) -> None:
        self.provider_job_id = provider_job_id
        self.remembered_ids.append(provider_job_id)

    def remembered(self) -> str | None:
        return self.provider_job_id

    def _keep(self, data: bytes) -> StoredImage:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
        self.received.append(data)
        return StoredImage(f"test/{len(self.received)}.png", "memory://", "image/png", len(data), width, height)

    def sizes(self) -> list[tuple[int, int]]:
        sizes = []
        for data in self.received:
            with Image.open(io.BytesIO(data)) as image:
                sizes.append(image.size)
        return sizes


@pytest.fixture(scope="module")
async def served_stability() -> AsyncIterator[Served]:
    recorder, script = Recorder(), Script()
    app = Starlette(routes=[*sync_routes(recorder, script), *input_routes(recorder)])
    async with serve(app) as base_url:
        yield Served(base_url, recorder, script)


@pytest.fixture
def fake(served_stability: Served) -> Served:
    served_stability.recorder.clear()
    served_stability.script.reset()
    return served_stability


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def provider_for(fake: Served, http: httpx.AsyncClient | None, **overrides: Any) -> stability.StabilityProvider:
    values: dict[str, Any] = {
        "STABILITY_API_KEY": STABILITY_KEY,
        "STABILITY_BASE_URL": fake.base_url,
        "PROVIDER_TIMEOUT_SECONDS": 5.0,
        "DOWNLOAD_ALLOWLIST": ["127.0.0.1"],
        "POLL_INTERVAL_SECONDS": 0.01,
        "POLL_TIMEOUT_SECONDS": 5.0,
    }
    return stability.StabilityProvider.from_settings(Settings(_env_file=None, **(values | overrides)), http)


def call_for(model: str, **spec: Any) -> ProviderCall:
    spec.setdefault("prompt", PROMPT)
    return ProviderCall(
        job_id="job-1",
        canvas_id="canvas-1",
        node_id="node-1",
        provider="stability",
        model=model,
        spec=PromptSpec(**spec),
    )


# Creative upscale: submit, poll, store --------------------------------------------------------------------------


async def test_upscale_sends_the_input_image_as_multipart_and_polls_the_results_until_done(
    fake: Served, http: httpx.AsyncClient
) -> None:
    sink = RememberingSink()
    provider = provider_for(fake, http)
    call = call_for("upscale-creative", previous_image=fake.input_url("photo.png"), seed=7, negative_prompt="blur")

    provenance = await provider.generate(call, sink)

    (submit,) = fake.requests("POST", UPSCALE_PATH)
    assert submit.headers["authorization"] == f"Bearer {STABILITY_KEY}"
    assert submit.headers["accept"] == "application/json"
    assert submit.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert form_fields(submit) == {"prompt": PROMPT, "output_format": "png", "seed": "7", "negative_prompt": "blur"}
    image = form_files(submit)["image"]
    assert (image.filename, image.content_type, image.data) == ("input.png", "image/png", input_image("png"))

    (job_id,) = sink.remembered_ids
    assert JOB_ID.match(job_id)
    polls = fake.requests("GET", RESULTS_PATH)
    assert [poll.path for poll in polls] == [f"{RESULTS_PATH}{job_id}"] * (STABILITY_PENDING_POLLS + 1)
    assert all(poll.headers["authorization"] == f"Bearer {STABILITY_KEY}" for poll in polls)
    assert all(poll.headers["accept"] == "image/*" for poll in polls)
    assert len(fake.requests("GET", "/inputs/")) == 1

    upscaled = (INPUT_SIZE[0] * STABILITY_UPSCALE_FACTOR, INPUT_SIZE[1] * STABILITY_UPSCALE_FACTOR)
    assert sink.sizes() == [upscaled]
    assert provenance.provider_job_id == job_id
    assert provenance.seed == 7
    assert provenance.effective == {"n": 1}


async def test_a_retried_attempt_resumes_the_remembered_job_and_never_submits_twice(
    fake: Served, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake, http, POLL_INTERVAL_SECONDS=0.2)
    call = call_for("upscale-creative", previous_image=fake.input_url("photo.png"))
    first = RememberingSink()
    # The first attempt dies while it polls (a worker crash); the activity's heartbeat details kept the id.
    attempt = asyncio.create_task(provider.generate(call, first))
    while not fake.requests("GET", RESULTS_PATH):
        assert not attempt.done(), attempt
        await asyncio.sleep(0.01)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert first.received == [] and first.provider_job_id is not None

    second = RememberingSink(provider_job_id=first.provider_job_id)
    provenance = await provider.generate(call, second)

    assert len(fake.requests("POST", UPSCALE_PATH)) == 1
    assert len(fake.requests("GET", "/inputs/")) == 1  # the resumed attempt does not fetch the input again
    assert second.remembered_ids == []
    assert len(second.received) == 1
    assert provenance.provider_job_id == first.provider_job_id


async def test_a_result_that_is_gone_fails_for_good(fake: Served, http: httpx.AsyncClient) -> None:
    expired = "f" * 64  # e.g. remembered by an attempt more than 24 hours ago
    with pytest.raises(ProviderRejected) as raised:
        await provider_for(fake, http).generate(
            call_for("upscale-creative", previous_image=fake.input_url("photo.png")),
            RememberingSink(provider_job_id=expired),
        )
    assert raised.value.type == JOB_FAILED and not raised.value.retryable
    assert f"no result for job {expired}" in raised.value.message and "24 hours" in raised.value.message
    assert fake.requests("POST", UPSCALE_PATH) == []


async def test_a_server_error_while_polling_is_retryable_and_keeps_the_job(
    fake: Served, http: httpx.AsyncClient
) -> None:
    broken = {"id": "e1", "name": "internal_error", "errors": ["An unexpected server error occurred"]}
    fake.script.queue(STABILITY_RESULTS, ("status", 503, broken))
    sink = RememberingSink()
    with pytest.raises(ProviderUnavailable, match="Stability answered HTTP 503"):
        await provider_for(fake, http).generate(
            call_for("upscale-creative", previous_image=fake.input_url("photo.png")), sink
        )
    assert sink.provider_job_id is not None  # the next attempt resumes it


async def test_polling_gives_up_after_the_poll_timeout(fake: Served, http: httpx.AsyncClient) -> None:
    running = ("status", 202, {"id": "x", "status": "in-progress"})
    fake.script.queue(STABILITY_RESULTS, *[running] * 200)
    provider = provider_for(fake, http, POLL_INTERVAL_SECONDS=0.02, POLL_TIMEOUT_SECONDS=0.2)
    with pytest.raises(ProviderUnavailable, match="still running after 0.2 s"):
        await provider.generate(
            call_for("upscale-creative", previous_image=fake.input_url("photo.png")), RememberingSink()
        )
    assert 3 <= len(fake.requests("GET", RESULTS_PATH)) < 50


async def test_a_filtered_upscale_is_a_content_policy_failure(fake: Served, http: httpx.AsyncClient) -> None:
    fake.script.queue(STABILITY_UPSCALE, "all_filtered")
    sink = RememberingSink()
    with pytest.raises(ProviderRejected) as raised:
        await provider_for(fake, http).generate(
            call_for("upscale-creative", previous_image=fake.input_url("photo.png")), sink
        )
    assert raised.value.type == CONTENT_POLICY
    assert sink.received == []


# Input images: fetched by the worker, guarded like result downloads ----------------------------------------------


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
    url: str, overrides: dict[str, Any], reason: str, fake: Served, http: httpx.AsyncClient
) -> None:
    provider = provider_for(fake, http, **overrides)
    input_url = url.format(base=fake.base_url)
    for model in ("upscale-creative", "sd3.5-large"):
        with pytest.raises(ProviderRejected) as raised:
            await provider.generate(call_for(model, previous_image=input_url), RememberingSink())
        assert raised.value.type == INVALID_REQUEST and not raised.value.retryable
        assert reason in raised.value.message and input_url in raised.value.message
    assert fake.requests("POST", "/v2beta/") == []
    if "DOWNLOAD_ALLOWLIST" in overrides:
        assert fake.requests("GET", "/inputs/") == []  # refused before connecting


async def test_an_unreachable_input_host_is_retryable(fake: Served, http: httpx.AsyncClient) -> None:
    closed = "http://127.0.0.1:9/photo.png"
    with pytest.raises(ProviderUnavailable, match="downloading the input image"):
        await provider_for(fake, http).generate(
            call_for("stable-image-ultra", previous_image=closed), RememberingSink()
        )


# Image-to-image on the synchronous generate endpoints ------------------------------------------------------------


async def test_sd3_image_to_image_sends_image_strength_and_mode_on_every_call(
    fake: Served, http: httpx.AsyncClient
) -> None:
    sink = RememberingSink()
    call = call_for(
        "sd3.5-large", previous_image=fake.input_url("photo.jpg"), strength=0.3, aspect_ratio="16:9", seed=10, n=2
    )
    provenance = await provider_for(fake, http).generate(call, sink)

    calls = fake.requests("POST", "/v2beta/stable-image/generate/sd3")
    assert len(calls) == 2 and len(sink.received) == 2
    for index, request in enumerate(calls):
        assert request.headers["authorization"] == f"Bearer {STABILITY_KEY}"
        assert form_fields(request) == {
            "prompt": PROMPT,
            "output_format": "png",
            "seed": str(10 + index),
            "strength": "0.3",
            "model": "sd3.5-large",
            "mode": "image-to-image",
        }
        image = form_files(request)["image"]
        assert (image.filename, image.content_type, image.data) == ("input.jpg", "image/jpeg", input_image("jpg"))
    assert len(fake.requests("GET", "/inputs/")) == 1  # fetched once for both calls
    assert provenance.effective == {"n": 2, "strength": 0.3, "ignored": ["aspectRatio"], "seeds": [10, 11]}
    assert sink.remembered_ids == []


async def test_ultra_image_to_image_uses_the_default_strength(fake: Served, http: httpx.AsyncClient) -> None:
    call = call_for("stable-image-ultra", previous_image=fake.input_url("photo.png"), style="anime")
    provenance = await provider_for(fake, http).generate(call, RememberingSink())
    (request,) = fake.requests("POST", "/v2beta/stable-image/generate/ultra")
    fields = form_fields(request)
    assert fields["strength"] == str(stability.DEFAULT_STRENGTH) and fields["style_preset"] == "anime"
    assert "aspect_ratio" not in fields and "mode" not in fields
    assert "image" in form_files(request)
    assert provenance.effective["strength"] == stability.DEFAULT_STRENGTH


# Checked before any call: which models take an input image -------------------------------------------------------


def all_providers() -> dict[str, Any]:
    settings = Settings(
        _env_file=None,
        OPENAI_API_KEY="k",
        GOOGLE_API_KEY="k",
        STABILITY_API_KEY="k",
        REPLICATE_API_TOKEN="k",
        MIDJOURNEY_BASE_URL="http://127.0.0.1:9",
    )
    return build_providers(settings)


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "dall-e-3"),
        ("google", "imagen-4.0-generate-001"),
        ("pollinations", "flux"),
        ("replicate", "black-forest-labs/flux-schnell"),
        ("stability", "stable-image-core"),
    ],
)
def test_models_that_draw_from_text_alone_refuse_an_input_image(provider: str, model: str) -> None:
    with pytest.raises(InvalidJobRequest) as raised:
        all_providers()[provider].check_request(model, PromptSpec(prompt=PROMPT, previous_image="https://x.test/a.png"))
    assert raised.value.field == "previousImage"
    assert "cannot use previousImage" in raised.value.message


@pytest.mark.parametrize(
    ("spec", "field"),
    [({}, "previousImage"), ({"previous_image": "https://x.test/a.png", "n": 2}, "n")],
    ids=["no-input-image", "two-outputs"],
)
def test_upscale_needs_exactly_one_input_image(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidJobRequest) as raised:
        all_providers()["stability"].check_request("upscale-creative", PromptSpec(prompt=PROMPT, **spec))
    assert raised.value.field == field


def test_upscale_reports_what_it_ignores() -> None:
    spec = PromptSpec(prompt=PROMPT, previous_image="https://x.test/a.png", strength=0.4, size="1024x1024", seed=3)
    assert all_providers()["stability"].check_request("upscale-creative", spec) == {
        "n": 1,
        "ignored": ["size", "strength"],
    }


# Through the API, Temporal and the worker ------------------------------------------------------------------------


async def test_upscale_end_to_end_keeps_image_bytes_out_of_history(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    input_url = f"{fake_providers.url}/outputs/input.png"
    async with running_stack(provider_settings, temporal_client) as stack:
        started = await stack.start(
            PROMPT, provider="stability", model="upscale-creative", promptSpec={"previousImage": input_url, "seed": 5}
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
            PROMPT, provider="stability", model="upscale-creative", promptSpec={"previousImage": input_url}
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


def payloads_in(message: ProtoMessage) -> Iterator[Payload]:
    """Every Payload inside a history event (inputs, results, heartbeat details, ...), however deeply nested."""
    if isinstance(message, Payload):
        yield message
        return
    for _, value in message.ListFields():
        if isinstance(value, ProtoMessage):
            yield from payloads_in(value)
        elif not isinstance(value, str | bytes | int | float):
            # A repeated field or a map of messages (e.g. a header's fields).
            for item in value.values() if hasattr(value, "values") else value:
                if isinstance(item, ProtoMessage):
                    yield from payloads_in(item)


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
                    "promptSpec": {"basePrompt": PROMPT, "previousImage": input_url},
                },
            )
            for provider, model in (("openai", "dall-e-3"), ("stability", "stable-image-core"))
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
                "promptSpec": {"basePrompt": PROMPT, **prompt_spec},
            },
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_request"
    (detail,) = answer.json()["details"]
    assert detail["field"] == field and message in detail["message"], detail


async def test_the_upscaler_is_listed_with_stability(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    async with running_stack(provider_settings, temporal_client, workers=False) as stack:
        listed = (await stack.api.get("/v1/providers")).json()["items"]
    (item,) = [item for item in listed if item["name"] == "stability"]
    assert "upscale-creative" in item["models"] and "stable-image-core" in item["models"]
    assert "previousImage" in item["description"]
