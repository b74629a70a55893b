"""The spec's interfaces, as a client written from them sees the API.

Each test sends or checks the shapes field for field: StartImageJobRequest verbatim, ImageJobRecord,
ImageProgressEvent on both streams, ImageJobStatus, the spec's R2_* settings, and image URLs that never expire.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft7Validator, FormatChecker
from PIL import Image
from temporalio.client import Client

from core.config import Settings, lookalike_settings
from core.db import PROJECT_ROOT
from tests.fakes.app import FakeProviders
from tests.fakes.openai import OPENAI
from tests.fixtures.s3 import S3_ACCESS_KEY, S3_SECRET_KEY, s3_admin_client
from tests.fixtures.stack import Stack, make_settings, running_stack
from tests.helpers import subscribed
from tests.sse import read_events

SPEC_STATUSES = {"pending", "running", "completed", "failed"}
SPEC_SCHEMAS = PROJECT_ROOT / "tests" / "contract" / "spec.schema.json"
WEB = PROJECT_ROOT / "web"


def spec_validator(interface: str) -> Draft7Validator:
    """A validator for one of the spec's interfaces (web/spec/contract.ts), date-time formats checked."""
    schemas = json.loads(SPEC_SCHEMAS.read_text())
    return Draft7Validator({**schemas, "$ref": f"#/definitions/{interface}"}, format_checker=FormatChecker())


def assert_spec_shape(interface: str, value: dict[str, Any]) -> None:
    """`value` is what a client written from the spec's `interface` expects: every declared field of its declared
    type, optional ones absent rather than null; our own additions pass."""
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in spec_validator(interface).iter_errors(value)
    ]
    assert not errors, f"{interface}: {errors} in {value}"


def test_the_spec_schemas_are_generated_from_the_specs_interfaces(tmp_path: Path) -> None:
    generated = tmp_path / "spec.schema.json"
    generator = WEB / "node_modules" / ".bin" / "ts-json-schema-generator"
    command = [generator, "--path", "spec/contract.ts", "--type", "*", "--additional-properties", "--no-type-check"]
    subprocess.run([*command, "--out", generated], cwd=WEB, check=True, capture_output=True, timeout=120)
    assert json.loads(generated.read_text()) == json.loads(SPEC_SCHEMAS.read_text()), "stale: npm run gen:spec-schemas"
    # The schemas are strict where the spec is: an optional field set to null is refused.
    assert list(spec_validator("ImageJobRecord").iter_errors({"jobId": "j", "error": None}))


def spec_request(canvas_id: str) -> dict[str, Any]:
    """A StartImageJobRequest exactly as the spec's TypeScript interface has it, every field set."""
    return {
        "nodeId": "node-1",
        "workflowId": canvas_id,
        "promptSpec": {
            "basePrompt": "a lighthouse at dusk",
            "styleModifiers": ["watercolor", "soft light"],
            "size": "640x360",
            "aspectRatio": "16:9",
            "quality": "hd",
            "seed": 7,
            "negativePrompt": "people",
        },
        "provider": "local",
        "model": "procedural",
        "webhookUrl": "http://127.0.0.1:9/hooks",
        "metadata": {"requestedBy": "contract-test", "tags": ["a", "b"]},
    }


def parse_date(value: Any) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def assert_spec_record(record: dict[str, Any], request: dict[str, Any]) -> None:
    """Every ImageJobRecord field with the spec's type."""
    assert isinstance(record["jobId"], str) and record["jobId"]
    assert record["nodeId"] == request["nodeId"]
    assert record["workflowId"] == request["workflowId"]
    assert record["provider"] == request["provider"]
    assert record["model"] == request["model"]
    assert record["status"] == "completed"
    started, finished = parse_date(record["startedAt"]), parse_date(record["finishedAt"])
    assert started <= finished
    assert isinstance(record["imageUrl"], str) and record["imageUrl"].startswith("http")
    assert record["metadata"] == request["metadata"]
    assert "error" not in record and "errorCode" not in record  # optional and unset: absent, never null
    assert record["progress"] == 100


async def test_spec_request_verbatim_runs_to_the_node(stack: Stack) -> None:
    canvas_id = "canvas-" + uuid.uuid4().hex[:8]
    request = spec_request(canvas_id)
    answer = await stack.api.post("/v1/jobs", json=request)
    assert answer.status_code == 202, answer.text
    pending = answer.json()
    assert pending["status"] == "pending"
    parse_date(pending["startedAt"])  # the spec types startedAt as always present
    assert pending["effective"]["styleModifiers"] == {"appendedToPrompt": ["watercolor", "soft light"]}

    record = await stack.wait(pending["jobId"])
    assert_spec_record(record, request)
    assert record["promptSpec"]["basePrompt"] == "a lighthouse at dusk"
    async with httpx.AsyncClient() as http:
        image = await http.get(record["imageUrl"])
    assert Image.open(io.BytesIO(image.content)).size == (640, 360)

    node = await stack.node(canvas_id, "node-1")
    assert node["type"] == "image_generation"
    assert node["data"]["imageUrl"] == record["imageUrl"]
    assert node["data"]["status"] == "completed"
    assert node["data"]["progress"] == 100

    status = await stack.api.get(f"/v1/jobs/{pending['jobId']}/status")
    assert status.json() == {
        "job_id": pending["jobId"],
        "status": "completed",
        "progress": 100,
        "images": [{"url": record["imageUrl"]}],
    }


# Each SSE `event:` name, and the spec's kind and moment (`data.moment`) its body carries.
EVENT_NAMES: dict[str, tuple[str, str | None]] = {
    "created": ("log", "created"),
    "status": ("log", "running"),
    "progress": ("progress", None),
    "log": ("log", None),
    "webhook": ("log", "webhook"),
    "completed": ("log", "completed"),
    "error": ("error", None),
    "cancelled": ("error", "cancelled"),
}


async def collect_job_events(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    """The job's events, each body with the SSE `event:` name it came under (as `event`)."""
    events = []
    async with stack.api.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        async for event in read_events(response):
            body = event.json()
            assert (body["kind"], body.get("data", {}).get("moment")) == EVENT_NAMES[event.event], (event.event, body)
            events.append({**body, "event": event.event})
    return events


def assert_spec_event(event: dict[str, Any], job_id: str) -> None:
    assert event["jobId"] == job_id
    parse_date(event["timestamp"])
    assert event["kind"] in {"progress", "log", "error"}
    assert isinstance(event["message"], str) and event["message"].strip(), event
    assert all(value is not None for value in event.values()), event  # unset optional fields are absent
    if "progress" in event:
        assert 0 <= event["progress"] <= 100
    if "status" in event:
        assert event["status"] in SPEC_STATUSES


async def test_events_carry_the_spec_fields_and_sentences(stack: Stack) -> None:
    started = await stack.start("harbour at night", promptSpec={"size": "512x512"})
    events = await collect_job_events(stack, started["jobId"])
    for event in events:
        assert_spec_event(event, started["jobId"])
    by_name = {event["event"]: event for event in events}
    assert by_name["created"]["message"] == "Queued for local:procedural"
    assert by_name["status"]["message"] == "Generating with local:procedural"
    assert by_name["completed"]["message"].startswith("Stored 512x512 PNG, ")
    assert by_name["completed"]["progress"] == 100
    progress = [event["progress"] for event in events if event["kind"] == "progress"]
    assert progress and all(1 < value <= 100 for value in progress), progress  # percent, not a fraction


async def test_failed_job_reads_as_a_sentence(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.script.queue(OPENAI, "moderation")
    async with running_stack(provider_settings, temporal_client) as stack:
        started = await stack.start("a harbour", provider="openai", model="gpt-image-2.5-flare")
        record = await stack.wait(started["jobId"], timeout=40)
        events = await collect_job_events(stack, started["jobId"])
        status = (await stack.api.get(f"/v1/jobs/{started['jobId']}/status")).json()
    assert record["status"] == "failed"
    assert isinstance(record["error"], str) and "safety system" in record["error"]
    assert record["errorCode"] == "ContentPolicyViolation"
    error = next(event for event in events if event["kind"] == "error")
    assert error["message"] == record["error"]
    assert (status["status"], status["error"]) == ("failed", record["error"])


async def test_cancelled_job_polls_as_failed_for_spec_clients(stack: Stack) -> None:
    started = await stack.start("slow harbour", promptSpec={"size": "64x64"})
    await stack.wait(started["jobId"], statuses=("running",))
    assert (await stack.api.post(f"/v1/jobs/{started['jobId']}/cancel")).status_code == 202
    record = await stack.wait(started["jobId"])
    assert (record["status"], record["errorCode"]) == ("failed", "Cancelled")
    assert record["error"] == "The job was cancelled before it finished; retry it to generate the image."
    status = (await stack.api.get(f"/v1/jobs/{started['jobId']}/status")).json()
    assert (status["status"], status["error"]) == ("failed", record["error"])
    events = await collect_job_events(stack, started["jobId"])
    assert (events[-1]["event"], events[-1]["kind"], events[-1]["status"]) == ("cancelled", "error", "failed")
    # The spec's status has no fourth ending, but the list still finds cancelled jobs by what they are.
    listed = (await stack.api.get("/v1/jobs", params={"status": "cancelled", "limit": 200})).json()["items"]
    assert started["jobId"] in {item["jobId"] for item in listed}


async def test_canvas_stream_events_have_the_spec_shape(stack: Stack) -> None:
    canvas_id = "canvas-" + uuid.uuid4().hex[:8]
    seen: list[dict[str, Any]] = []
    async with subscribed(stack.api, f"/v1/canvases/{canvas_id}/events") as events:
        started = await stack.start("pier", workflowId=canvas_id, promptSpec={"size": "64x64"})

        async def follow() -> None:
            async for event in events:
                if event.event != "node":
                    seen.append(event.json())
                    if event.event == "completed":
                        return

        await asyncio.wait_for(follow(), timeout=30)
    for event in seen:
        assert_spec_event(event, started["jobId"])


async def test_prompt_is_an_alias_of_base_prompt(stack: Stack) -> None:
    body = {"workflowId": "c-alias", "nodeId": "n", "promptSpec": {"prompt": "old clients"}, "provider": "local"}
    answer = await stack.api.post("/v1/jobs", json=body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["promptSpec"]["basePrompt"] == "old clients"


async def test_previous_image_on_a_model_that_cannot_names_the_ones_that_can(
    stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, STABILITY_API_KEY="sk-test")
    async with running_stack(settings, temporal_client, workers=False) as with_stability:
        body = spec_request("c-prev")
        body |= {"provider": "stability", "model": "stable-image-core"}
        body["promptSpec"] = {"basePrompt": "refine", "previousImage": "https://example.com/a.png"}
        answer = await with_stability.api.post("/v1/jobs", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert error["code"] == "unsupported_request"
    assert "previousImage" in error["message"] and "stable-image-ultra" in error["message"]


def r2_settings(stack_settings: Settings, s3_server: str, bucket: str, **extra: Any) -> Settings:
    """The spec's R2_* names only, as a deployment following the spec would set them."""
    environment = {
        "R2_ENDPOINT": s3_server,
        "R2_BUCKET_NAME": bucket,
        "R2_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "R2_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        **extra,
    }
    from_spec_names = Settings.model_validate(environment)
    names = ("S3_BUCKET", "S3_ENDPOINT_URL", "S3_PUBLIC_BASE_URL", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY")
    return make_settings(
        stack_settings,
        STORAGE_BACKEND="s3",
        S3_REGION="us-east-1",
        S3_PRESIGN_SECONDS=2,
        **{name: getattr(from_spec_names, name) for name in names},
    )


def test_spec_storage_names_configure_storage(s3_server: str) -> None:
    settings = Settings.model_validate(
        {"R2_ENDPOINT": s3_server, "R2_BUCKET_NAME": "spec-bucket", "R2_PUBLIC_URL": "https://img.example.com"}
    )
    assert (settings.S3_BUCKET, settings.s3_endpoint_url) == ("spec-bucket", s3_server)
    assert settings.S3_PUBLIC_BASE_URL == "https://img.example.com"
    assert settings.storage_backend == "s3"
    # Our own names win where both are set: one precedence, documented in the README.
    both = Settings.model_validate({"S3_BUCKET": "ours", "R2_BUCKET_NAME": "spec"})
    assert both.S3_BUCKET == "ours"
    assert Settings.model_validate({"S3_BUCKET_NAME": "aws-alt", "AWS_REGION": "eu-west-1"}).S3_REGION == "eu-west-1"


def test_lookalike_variables_are_warned_about() -> None:
    warnings = lookalike_settings({"OPENAI_KEY": "sk", "S3_BUCKET_NAM": "x", "OPENAI_API_KEY": "sk", "HOME": "/root"})
    assert len(warnings) == 2, warnings
    assert "OPENAI_KEY" in warnings[0] and "OPENAI_API_KEY" in warnings[0]
    assert "S3_BUCKET_NAM" in warnings[1]


@pytest.mark.parametrize("node_data_check", [True])
async def test_no_presigned_url_is_kept_and_the_stable_url_outlives_one(
    node_data_check: bool, stack_settings: Settings, s3_server: str, temporal_client: Client
) -> None:
    bucket = f"spec-{uuid.uuid4().hex[:16]}"
    s3_admin_client(s3_server).create_bucket(Bucket=bucket)
    settings = r2_settings(stack_settings, s3_server, bucket)
    async with running_stack(settings, temporal_client) as stack:
        started = await stack.start("harbour", promptSpec={"size": "128x96"}, nodeId="n-s3")
        record = await stack.wait(started["jobId"])
        node = await stack.node(started["workflowId"], "n-s3")
        assert record["status"] == "completed", record
        kept = [record["imageUrl"], record["thumbnailUrl"], *record["imageUrls"], node["data"]["imageUrl"]]
        for url in kept:
            assert url.startswith(f"{settings.app_url}/files/images/"), url
            assert "Signature" not in url and "Expires" not in url
        await asyncio.sleep(settings.S3_PRESIGN_SECONDS + 1.5)  # any presigned URL made at completion has expired
        async with httpx.AsyncClient(follow_redirects=True) as http:
            image = await http.get(record["imageUrl"])
            first_hop = await http.get(record["imageUrl"], follow_redirects=False)
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (128, 96)
    assert first_hop.status_code == 302
    assert first_hop.headers["access-control-allow-origin"] == "*"


async def test_local_files_are_served_with_cors_and_type(stack: Stack) -> None:
    record = await stack.wait((await stack.start("cors", promptSpec={"size": "64x64"}))["jobId"])
    async with httpx.AsyncClient() as http:
        image = await http.get(record["imageUrl"], headers={"Origin": "http://elsewhere.example"})
        too_long = await http.get(f"{stack.base_url}/files/" + "a" * 5000)
    assert image.headers["access-control-allow-origin"] == "*"
    assert image.headers["content-type"] == "image/png"
    assert too_long.status_code == 404
    assert too_long.json()["code"] == "file_not_found"


async def test_every_record_event_status_and_node_in_every_state_has_the_specs_shape(
    stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=3000)
    canvas_id = "canvas-" + uuid.uuid4().hex[:8]
    missing = f"{settings.app_url}/files/images/nowhere/missing.png"
    async with running_stack(settings, temporal_client) as stack:
        seen: list[tuple[str, dict[str, Any]]] = []

        async def snapshot(job_id: str, node_id: str) -> dict[str, Any]:
            record = await stack.job(job_id)
            status = (await stack.api.get(f"/v1/jobs/{job_id}/status")).json()
            node = await stack.node(canvas_id, node_id)
            seen.extend([("ImageJobRecord", record), ("ImageJobStatus", status), ("ReactFlowNodeUpdate", node["data"])])
            return record

        done = await stack.start("completes", workflowId=canvas_id, nodeId="done")
        stopped = await stack.start("is cancelled", workflowId=canvas_id, nodeId="stopped")
        broken = await stack.start(
            "fails", workflowId=canvas_id, nodeId="broken", promptSpec={"previousImage": missing}
        )
        seen += [("ImageJobRecord", answer) for answer in (done, stopped, broken)]  # pending, as answered
        await stack.wait(stopped["jobId"], statuses=("running",))
        assert (await snapshot(stopped["jobId"], "stopped"))["status"] == "running"
        seen.append(("ImageJobRecord", (await stack.api.post(f"/v1/jobs/{stopped['jobId']}/cancel")).json()))
        for job, node_id in ((done, "done"), (stopped, "stopped"), (broken, "broken")):
            await stack.wait(job["jobId"])
            await snapshot(job["jobId"], node_id)
            seen += [("ImageProgressEvent", event) for event in await collect_job_events(stack, job["jobId"])]
        listed = (await stack.api.get("/v1/jobs", params={"workflowId": canvas_id})).json()["items"]
        seen += [("ImageJobRecord", record) for record in listed]

    for interface, value in seen:
        assert_spec_shape(interface, value)
    statuses = {value["status"] for interface, value in seen if interface == "ImageJobRecord"}
    assert statuses == SPEC_STATUSES, statuses
    kinds = {value["kind"] for interface, value in seen if interface == "ImageProgressEvent"}
    assert kinds == {"progress", "log", "error"}, kinds
    node_statuses = {value.get("status") for interface, value in seen if interface == "ReactFlowNodeUpdate"}
    assert node_statuses == {"running", "completed", "error", None}, node_statuses  # cancelled: as before the job
