"""Webhooks to the app's server: endpoints, Standard Webhooks signatures, durable retries, the delivery log and
replay, against a receiver on a real socket, real Temporal and real PostgreSQL. The worker-kill drill is in
tests/test_drills.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook
from temporalio.client import Client

from core.config import Settings
from core.webhook_signing import new_secret, signature, signed_headers
from tests.fakes.app import FakeProviders
from tests.fakes.app_receiver import AppReceiver, app_receiver
from tests.fakes.openai import OPENAI
from tests.fakes.server import RecordedRequest
from tests.fixtures.stack import Stack, make_settings, running_stack
from tests.helpers import eventually

# The test vector the Standard Webhooks specification publishes.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signer_reproduces_the_specifications_test_vector() -> None:
    sent_at = datetime.fromtimestamp(SPEC_TIMESTAMP, UTC)
    assert signature([SPEC_SECRET], SPEC_ID, sent_at, SPEC_BODY) == SPEC_SIGNATURE


def test_after_a_rotation_both_secrets_sign_and_each_verifies_alone() -> None:
    new, old = new_secret(), new_secret()
    headers = signed_headers([new, old], "msg_1", datetime.now(UTC), b'{"a": 1}')
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(b'{"a": 1}', headers) == {"a": 1}


def test_a_new_secret_is_whsec_and_base64_of_24_to_64_bytes() -> None:
    import base64

    secret = new_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
    assert new_secret() != secret


def hook_settings(base: Settings, schedule: str = "0,1,1") -> Settings:
    return make_settings(
        base,
        OUTBOUND_ALLOWLIST=["127.0.0.1"],
        OUTBOUND_WEBHOOK_RETRY_SECONDS=schedule.split(","),
        LOCAL_PROVIDER_DELAY_MS=0,
        DOWNLOAD_ALLOWLIST=["127.0.0.1"],
    )


@pytest.fixture
async def receiver() -> AsyncIterator[AppReceiver]:
    async with app_receiver() as running:
        yield running


@pytest.fixture
async def hook_stack(stack_settings: Settings, temporal_client: Client) -> AsyncIterator[Stack]:
    async with running_stack(hook_settings(stack_settings), temporal_client) as stack:
        yield stack


async def new_endpoint(stack: Stack, url: str, **fields: Any) -> dict[str, Any]:
    created = await stack.api.post("/v1/webhook-endpoints", json={"url": url, **fields})
    assert created.status_code == 201, created.text
    endpoint: dict[str, Any] = created.json()
    return endpoint


def about(receiver: AppReceiver, subject_id: str) -> list[RecordedRequest]:
    return [request for request in receiver.recorder.requests if request.json()["data"].get("jobId") == subject_id]


async def deliveries(stack: Stack, endpoint_id: str) -> list[dict[str, Any]]:
    listed = await stack.api.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def test_a_completed_job_is_delivered_on_the_third_attempt_signed_with_one_id_and_replayed(
    hook_stack: Stack, receiver: AppReceiver
) -> None:
    endpoint = await new_endpoint(hook_stack, receiver.url, description="my app")
    receiver.answer(500, 500)
    try:
        job = await hook_stack.start("a harbour at dawn")
        record = await hook_stack.wait(job["jobId"])
        sent = await eventually(
            lambda: len(about(receiver, job["jobId"])) >= 3 and about(receiver, job["jobId"]), what="3 attempts"
        )
        log = await eventually(lambda: _delivered(hook_stack, endpoint["id"]), what="the delivery logged as delivered")
        replayed = await hook_stack.api.post(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{log['id']}/replay")
        again = await eventually(lambda: len(about(receiver, job["jobId"])) >= 4, what="the replay")
        after_replay = await eventually(lambda: _delivered(hook_stack, endpoint["id"], attempts=4), what="4 attempts")
    finally:
        await hook_stack.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")

    assert record["status"] == "completed"
    assert again
    ids = {request.headers["webhook-id"] for request in about(receiver, job["jobId"])}
    assert ids == {log["id"]}, "every attempt and the replay carry one webhook-id"
    for request in sent:
        body = Webhook(endpoint["secret"]).verify(request.body, request.headers)
        assert body["type"] == "job.completed"
        assert body["data"]["jobId"] == job["jobId"] and body["data"]["imageUrl"] == record["imageUrl"]
        assert "base64" not in request.body.decode()
    assert (log["eventType"], log["attempts"], log["lastStatusCode"], log["subjectId"]) == (
        "job.completed",
        3,
        200,
        job["jobId"],
    )
    assert replayed.status_code == 202, replayed.text
    assert after_replay["status"] == "delivered"


async def _delivered(stack: Stack, endpoint_id: str, attempts: int = 3) -> dict[str, Any] | None:
    for delivery in await deliveries(stack, endpoint_id):
        if delivery["status"] == "delivered" and delivery["attempts"] >= attempts:
            return delivery
    return None


async def test_a_failed_job_sends_job_failed_and_an_endpoint_gets_only_the_events_it_asked_for(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client, receiver: AppReceiver
) -> None:
    fake_providers.script.queue(OPENAI, "moderation")
    async with running_stack(hook_settings(provider_settings), temporal_client) as stack:
        failures = await new_endpoint(stack, receiver.url, events=["job.failed"])
        try:
            failed = await stack.start("refused", provider="openai", model="gpt-image-2.5-flare")
            completed = await stack.start("fine", nodeId="node-2")
            records = [await stack.wait(job["jobId"]) for job in (failed, completed)]
            (request,) = await eventually(lambda: about(receiver, failed["jobId"]), what="job.failed")
            await asyncio.sleep(1.0)  # time enough for a job.completed to arrive, were it sent
        finally:
            await stack.api.delete(f"/v1/webhook-endpoints/{failures['id']}")

    assert [record["status"] for record in records] == ["failed", "completed"]
    body = Webhook(failures["secret"]).verify(request.body, request.headers)
    assert (body["type"], body["data"]["status"], body["data"]["errorCode"]) == (
        "job.failed",
        "failed",
        "ContentPolicyViolation",
    )
    assert about(receiver, completed["jobId"]) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hooks",
        "http://127.0.0.1:9/hooks",
        "ftp://example.com/hooks",
        "file:///etc/passwd",
        "not a url",
        "https://no-such-host.invalid/hooks",
    ],
)
async def test_endpoint_urls_outside_the_public_internet_get_422(url: str, stack: Stack) -> None:
    answer = await stack.api.post("/v1/webhook-endpoints", json={"url": url})
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_endpoint_url"), answer.text


async def test_endpoints_are_read_changed_rotated_and_deleted(hook_stack: Stack, receiver: AppReceiver) -> None:
    endpoint = await new_endpoint(hook_stack, receiver.url, events=["job.completed"])
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    read = (await hook_stack.api.get(path)).json()
    listed = (await hook_stack.api.get("/v1/webhook-endpoints")).json()["items"]
    patched = await hook_stack.api.patch(path, json={"events": None, "disabled": True, "description": "paused"})
    rotated = await hook_stack.api.post(f"{path}/rotate-secret")
    bad_event = await hook_stack.api.patch(path, json={"events": ["job.exploded"]})
    deleted = await hook_stack.api.delete(path)
    gone = await hook_stack.api.get(path)

    assert "secret" not in read and read["events"] == ["job.completed"]
    assert endpoint["id"] in [item["id"] for item in listed]
    assert patched.status_code == 200, patched.text
    assert (patched.json()["events"], patched.json()["disabled"], patched.json()["description"]) == (
        None,
        True,
        "paused",
    )
    assert patched.json()["disabledReason"] == "disabled through the API"
    assert rotated.status_code == 200 and rotated.json()["secret"] != endpoint["secret"]
    assert bad_event.status_code == 422
    assert deleted.status_code == 204 and gone.status_code == 404


async def test_a_410_disables_the_endpoint_and_ends_its_delivery(hook_stack: Stack, receiver: AppReceiver) -> None:
    endpoint = await new_endpoint(hook_stack, receiver.url)
    receiver.answer(410)
    try:
        job = await hook_stack.start("gone")
        await hook_stack.wait(job["jobId"])
        (delivery,) = await eventually(
            lambda: _with_status(hook_stack, endpoint["id"], "failed"), what="the delivery to fail"
        )
        read = (await hook_stack.api.get(f"/v1/webhook-endpoints/{endpoint['id']}")).json()
    finally:
        await hook_stack.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert (delivery["attempts"], delivery["lastStatusCode"]) == (1, 410)
    assert read["disabled"] is True and "410" in read["disabledReason"]


async def _with_status(stack: Stack, endpoint_id: str, status: str) -> list[dict[str, Any]]:
    return [delivery for delivery in await deliveries(stack, endpoint_id) if delivery["status"] == status]


async def test_a_503_with_retry_after_waits_at_least_that_long(
    stack_settings: Settings, temporal_client: Client, receiver: AppReceiver
) -> None:
    async with running_stack(hook_settings(stack_settings, "0,0.2"), temporal_client) as stack:
        endpoint = await new_endpoint(stack, receiver.url)
        receiver.answer(503, headers={"Retry-After": "2"})
        try:
            job = await stack.start("busy")
            first, second = await eventually(
                lambda: len(about(receiver, job["jobId"])) >= 2 and about(receiver, job["jobId"]), what="2 attempts"
            )
        finally:
            await stack.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert second.at - first.at >= 1.9


async def test_an_endpoint_failing_for_five_days_is_disabled_at_its_next_failure(
    hook_stack: Stack, receiver: AppReceiver, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    endpoint = await new_endpoint(hook_stack, receiver.url)
    async with db_sessions() as session, session.begin():
        await session.execute(
            text("UPDATE webhook_endpoints SET failing_since = now() - interval '5 days 1 hour' WHERE id = :id"),
            {"id": endpoint["id"]},
        )
    receiver.answer(500)
    try:
        job = await hook_stack.start("still failing")
        await hook_stack.wait(job["jobId"])
        read = await eventually(
            lambda: _disabled(hook_stack, endpoint["id"]), what="the endpoint to be disabled", timeout=30
        )
        await asyncio.sleep(1.5)  # the schedule's next attempt would come now; the endpoint is disabled
    finally:
        await hook_stack.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert "failed since" in read["disabledReason"]
    assert len(about(receiver, job["jobId"])) == 1


async def _disabled(stack: Stack, endpoint_id: str) -> dict[str, Any] | None:
    read: dict[str, Any] = (await stack.api.get(f"/v1/webhook-endpoints/{endpoint_id}")).json()
    return read if read["disabled"] else None


async def test_a_canvas_run_ending_sends_canvas_run_completed(hook_stack: Stack, receiver: AppReceiver) -> None:
    endpoint = await new_endpoint(hook_stack, receiver.url, events=["canvas_run.completed"])
    canvas_id = f"c-hook-{int(time.time() * 1000)}"
    board = {"nodes": [{"id": "A", "type": "image_generation", "data": {"prompt": "a kite"}}], "edges": []}
    try:
        assert (await hook_stack.api.put(f"/v1/canvases/{canvas_id}", json=board)).status_code == 200
        run = (await hook_stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={})).json()
        (request,) = await eventually(lambda: receiver.recorder.requests, what="canvas_run.completed")
    finally:
        await hook_stack.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    body = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert (body["type"], body["data"]["runId"], body["data"]["status"]) == (
        "canvas_run.completed",
        run["runId"],
        "completed",
    )


async def test_deliveries_older_than_30_days_are_pruned(
    hook_stack: Stack, receiver: AppReceiver, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    from store import outbound

    endpoint = await new_endpoint(hook_stack, receiver.url)
    try:
        job = await hook_stack.start("old news")
        await hook_stack.wait(job["jobId"])
        (delivery,) = await eventually(
            lambda: _with_status(hook_stack, endpoint["id"], "delivered"), what="the delivery"
        )
        async with db_sessions() as session, session.begin():
            await session.execute(
                text("UPDATE outbound_deliveries SET created_at = now() - interval '31 days' WHERE id = :id"),
                {"id": delivery["id"]},
            )
            assert await outbound.prune(session) >= 1
        left = await deliveries(hook_stack, endpoint["id"])
    finally:
        await hook_stack.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    assert left == []
