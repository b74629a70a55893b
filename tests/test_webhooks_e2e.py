"""Provider callbacks through the whole product: verified webhooks become workflow signals, polling covers the
providers that never call back, duplicates and late events change nothing, and nothing is lost while Temporal is
away. Real API socket, real Temporal, real PostgreSQL, fake providers over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import Webhook
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from core.config import Settings
from handoff.sweep import event_json
from models.payloads import Provenance, ProviderEvent
from providers.webhooks import job_webhook_token, job_webhook_url
from store import deliveries
from store.deliveries import Delivery
from tests.fakes.app import FakeProviders
from tests.fakes.replicate import REPLICATE_GET, REPLICATE_WEBHOOK_SECRET
from tests.fakes.server import free_port
from tests.fixtures.providers import dedicated_temporal, stored_files
from tests.fixtures.stack import Stack, make_settings, running_api, running_stack, running_workers
from tests.helpers import eventually

REPLICATE_MODEL = "black-forest-labs/flux-schnell"
POLLS = "/replicate/v1/predictions/"
# Long enough that a test which must complete by webhook never falls back to polling.
NO_POLLING = {"WEBHOOK_GRACE_SECONDS": 120.0}


def signed_headers(
    body: bytes,
    *,
    secret: str = REPLICATE_WEBHOOK_SECRET,
    webhook_id: str | None = None,
    sent_at: datetime | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers made by the reference library, as Replicate sends them."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    sent_at = sent_at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, sent_at, body.decode()),
    }


async def finished_prediction(fake: FakeProviders) -> dict[str, Any]:
    """The fake's only prediction, once it has succeeded (the provider is done, whoever hears of it)."""

    def done() -> dict[str, Any] | None:
        predictions = list(fake.state.predictions.values())
        return predictions[0] if len(predictions) == 1 and predictions[0]["status"] == "succeeded" else None

    prediction: dict[str, Any] = await eventually(done, what="the fake's prediction to succeed")
    return prediction


async def finished_task(fake: FakeProviders) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        tasks = list(fake.state.tasks.values())
        return tasks[0] if len(tasks) == 1 and tasks[0]["status"] == "SUCCESS" else None

    task: dict[str, Any] = await eventually(done, what="the fake's midjourney task to succeed")
    return task


async def history_events(client: Client, job_id: str) -> list[HistoryEvent]:
    return list((await client.get_workflow_handle(job_id).fetch_history()).events)


def signals(events: list[HistoryEvent]) -> list[dict[str, Any]]:
    """The provider events the workflow was signalled with, decoded (the default converter writes JSON)."""
    return [
        json.loads(event.workflow_execution_signaled_event_attributes.input.payloads[0].data)
        for event in events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    ]


def activities_scheduled(events: list[HistoryEvent], name: str) -> list[HistoryEvent]:
    return [
        event
        for event in events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and event.activity_task_scheduled_event_attributes.activity_type.name == name
    ]


async def event_kinds(sessions: async_sessionmaker[AsyncSession], job_id: str) -> list[str]:
    async with sessions() as session:
        result = await session.execute(
            text("SELECT kind FROM run_events WHERE run_id = :id ORDER BY id"), {"id": job_id}
        )
        return list(result.scalars())


def hook_path(settings: Settings, provider: str, job_id: str, attempt: int = 1) -> str:
    """The webhook URL the worker hands the provider for that submit attempt, as a path of the API."""
    return job_webhook_url(settings.WEBHOOK_SECRET, "", provider, job_id, attempt)


async def start_replicate_job(stack: Stack) -> dict[str, Any]:
    started = await stack.start("a lighthouse at dusk", provider="replicate", model=REPLICATE_MODEL)
    await stack.wait(started["jobId"], statuses=("running",))
    return started


async def test_a_standard_webhooks_signed_callback_completes_the_job(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.options.webhooks = False
    settings = make_settings(provider_settings, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        started = await start_replicate_job(stack)
        body = json.dumps(await finished_prediction(fake_providers)).encode()
        answer = await stack.api.post(
            hook_path(settings, "replicate", started["jobId"]), content=body, headers=signed_headers(body)
        )
        record = await stack.wait(started["jobId"])

    assert answer.status_code == 200 and answer.json() == {"status": "accepted"}, answer.text
    assert record["status"] == "completed", record
    assert [signal["status"] for signal in signals(await history_events(temporal_client, record["jobId"]))] == [
        "succeeded"
    ]
    assert fake_providers.requests("GET", POLLS) == []


async def test_unauthentic_callbacks_get_401_and_never_reach_the_workflow(
    provider_settings: Settings,
    fake_providers: FakeProviders,
    temporal_client: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_providers.options.webhooks = False
    settings = make_settings(provider_settings, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        replicate_job = await start_replicate_job(stack)
        midjourney_job = await stack.start("a lighthouse at dusk", provider="midjourney", nodeId="node-2")
        prediction = json.dumps(await finished_prediction(fake_providers)).encode()
        task = json.dumps(await finished_task(fake_providers)).encode()
        secret, other_job, mj_job = settings.WEBHOOK_SECRET, replicate_job["jobId"], midjourney_job["jobId"]
        replicate_url = hook_path(settings, "replicate", replicate_job["jobId"])
        midjourney_url = f"/v1/webhooks/midjourney/{midjourney_job['jobId']}"
        valid = signed_headers(prediction)
        missing_signature = {key: value for key, value in valid.items() if key != "webhook-signature"}
        plain = {"content-type": "application/json"}
        attempts = {
            "wrong signature": (replicate_url, signed_headers(prediction, secret="whsec_" + "A" * 32)),
            "missing header": (replicate_url, missing_signature),
            "six minutes old": (
                replicate_url,
                signed_headers(prediction, sent_at=datetime.now(UTC) - timedelta(minutes=6)),
            ),
            "tampered body": (replicate_url, valid),
            "replicate without token": (replicate_url.partition("?")[0], valid),
            "midjourney token on a replicate job": (
                hook_path(settings, "midjourney", replicate_job["jobId"]).replace("midjourney", "replicate", 1),
                valid,
            ),
            "wrong job token": (f"{midjourney_url}?attempt=1&token={'0' * 64}", plain),
            "another job's token": (
                f"{midjourney_url}?attempt=1&token={job_webhook_token(secret, 'midjourney', other_job, 1)}",
                plain,
            ),
            "another attempt's token": (
                f"{midjourney_url}?attempt=2&token={job_webhook_token(secret, 'midjourney', mj_job, 1)}",
                plain,
            ),
            "no job token": (midjourney_url, plain),
        }
        answers = {}
        for name, (url, headers) in attempts.items():
            body = task if "midjourney" in url else prediction
            if name == "tampered body":
                body = body.replace(b'"succeeded"', b'"failed"')
            answers[name] = await stack.api.post(url, content=body, headers=headers)
        refused_histories = [
            await history_events(temporal_client, job["jobId"]) for job in (replicate_job, midjourney_job)
        ]

        # The same callbacks, authentic, do reach the workflows: the history check above can see a signal.
        accepted = await stack.api.post(replicate_url, content=prediction, headers=valid)
        accepted_mj = await stack.api.post(hook_path(settings, "midjourney", midjourney_job["jobId"]), content=task)
        records = [await stack.wait(job["jobId"]) for job in (replicate_job, midjourney_job)]

    for name, answer in answers.items():
        assert answer.status_code == 401, (name, answer.text)
        assert answer.json()["code"] == "invalid_webhook_signature", name
    rejections = [record.getMessage() for record in caplog.records if "refused" in record.getMessage()]
    forged = [message for message in rejections if "refused forged" in message]
    # Wrong or missing URL tokens are forgeries anyone can send at any rate: logged at most once per interval.
    assert len(forged) <= 1
    assert len(rejections) - len(forged) == sum("token" not in name for name in attempts)
    assert not any("/outputs/" in message or "IMAGINE" in message for message in rejections)  # logged without body
    for events in refused_histories:
        assert signals(events) == []
    assert (accepted.status_code, accepted_mj.status_code) == (200, 200)
    assert [record["status"] for record in records] == ["completed", "completed"]
    for record in records:
        assert len(signals(await history_events(temporal_client, record["jobId"]))) == 1


async def test_repeated_and_late_deliveries_change_nothing(
    provider_settings: Settings,
    fake_providers: FakeProviders,
    temporal_client: Client,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    fake_providers.options.webhook_copies = 3
    settings = make_settings(provider_settings, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        started = await start_replicate_job(stack)
        record = await stack.wait(started["jobId"])
        await fake_providers.state.settle()
        node_before = await stack.node(started["workflowId"], "node-1")
        completed = next(
            delivery
            for delivery in fake_providers.state.deliveries_sent
            if json.loads(delivery.body)["status"] == "succeeded"
        )
        url = hook_path(settings, "replicate", record["jobId"])
        repeat = await stack.api.post(url, content=completed.body, headers=completed.headers)
        late_progress = json.dumps({**json.loads(completed.body), "status": "processing", "output": None}).encode()
        late = await stack.api.post(url, content=late_progress, headers=signed_headers(late_progress))
        node_after = await stack.node(started["workflowId"], "node-1")
        record_after = await stack.job(record["jobId"])

    assert record["status"] == "completed", record
    assert repeat.status_code == 200 and repeat.json()["status"] == "duplicate"
    assert late.status_code == 200 and late.json()["status"] in ("ignored", "duplicate")
    events = await history_events(temporal_client, record["jobId"])
    assert [signal["status"] for signal in signals(events)].count("succeeded") == 1
    assert len(activities_scheduled(events, "store_outputs")) == 1
    kinds = await event_kinds(db_sessions, record["jobId"])
    assert kinds.count("completed") == 1 and kinds[-1] == "completed"
    delivery_ids = [delivery.headers["webhook-id"] for delivery in fake_providers.state.deliveries_sent]
    assert len(delivery_ids) == 3 * len(set(delivery_ids))  # every delivery arrived three times...
    assert kinds.count("webhook") == len(set(delivery_ids))  # ...and was taken once
    assert stored_files(settings, started["workflowId"]) == [f"{record['jobId']}.png", f"{record['jobId']}.thumb.webp"]
    assert node_after == node_before
    assert record_after == record


async def test_a_provider_that_never_calls_back_completes_by_polling(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.options.webhooks = False
    fake_providers.options.step_seconds = 0.5
    settings = make_settings(provider_settings, WEBHOOK_GRACE_SECONDS=1.0, POLL_INTERVAL_SECONDS=0.5)
    async with running_stack(settings, temporal_client) as stack:
        started = await start_replicate_job(stack)
        record = await stack.wait(started["jobId"])

    assert record["status"] == "completed", record
    (create,) = fake_providers.requests("POST", "/replicate/v1/models/")
    polls = fake_providers.requests("GET", POLLS)
    assert len(polls) >= 2, polls
    assert polls[0].at - create.at >= settings.WEBHOOK_GRACE_SECONDS
    gaps = [later.at - earlier.at for earlier, later in zip(polls, polls[1:], strict=False)]
    assert all(gap >= settings.POLL_INTERVAL_SECONDS for gap in gaps), gaps
    assert fake_providers.state.deliveries_sent == []


async def test_no_poll_happens_after_the_terminal_webhook(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    # Polls start before the provider finishes and never see the result, so only the webhook can end the wait.
    fake_providers.options.step_seconds = 0.5
    still_running = {"id": "unknown", "status": "processing", "logs": "", "output": None}
    fake_providers.script.queue(REPLICATE_GET, *[("status", 200, still_running)] * 50)
    settings = make_settings(provider_settings, WEBHOOK_GRACE_SECONDS=0.3, POLL_INTERVAL_SECONDS=0.3)
    async with running_stack(settings, temporal_client) as stack:
        started = await start_replicate_job(stack)
        record = await stack.wait(started["jobId"])
        polls_at_completion = len(fake_providers.requests("GET", POLLS))
        await asyncio.sleep(1.0)

    assert record["status"] == "completed", record
    events = await history_events(temporal_client, record["jobId"])
    terminal_signal = next(
        event
        for event in events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and json.loads(event.workflow_execution_signaled_event_attributes.input.payloads[0].data)["status"]
        == "succeeded"
    )
    polls = activities_scheduled(events, "poll_job")
    assert polls, "the workflow should have been polling before the webhook came"
    assert all(poll.event_id < terminal_signal.event_id for poll in polls)
    assert len(fake_providers.requests("GET", POLLS)) == polls_at_completion == len(polls)


async def test_a_webhook_that_arrives_before_the_workflow_waits_is_kept(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    # The provider finishes and calls back at once, while our submit call is still waiting for its answer.
    fake_providers.options.step_seconds = 0.0
    fake_providers.app.hold("POST", "/replicate/v1/models/", 1.5)
    settings = make_settings(provider_settings, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        started = await start_replicate_job(stack)
        record = await stack.wait(started["jobId"])

    assert record["status"] == "completed", record
    events = await history_events(temporal_client, record["jobId"])
    (submit,) = activities_scheduled(events, "submit_job")
    submit_completed = next(
        event
        for event in events
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        and event.activity_task_completed_event_attributes.scheduled_event_id == submit.event_id
    )
    first_signal = next(
        event for event in events if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
    )
    assert first_signal.event_id < submit_completed.event_id
    assert "succeeded" in [signal["status"] for signal in signals(events)]
    assert fake_providers.requests("GET", POLLS) == []


async def test_a_prediction_left_by_a_retried_submit_is_cancelled_and_never_used(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    # Replicate creates the first prediction but its answer comes after our timeout: the retried submit creates a
    # second one. Both call the job's webhook URL.
    fake_providers.app.hold("POST", "/replicate/v1/models/", 2.5)
    settings = make_settings(provider_settings, PROVIDER_TIMEOUT_SECONDS=1.0, **NO_POLLING)
    creates = ("POST", "/replicate/v1/models/")
    async with running_stack(settings, temporal_client) as stack:
        started = await stack.start("a lighthouse at dusk", provider="replicate", model=REPLICATE_MODEL)
        await eventually(lambda: fake_providers.requests(*creates), what="the first create to reach Replicate")
        fake_providers.app.holds.clear()  # the retry is answered at once
        record = await stack.wait(started["jobId"], timeout=30)
    await fake_providers.state.settle()

    assert record["status"] == "completed", record
    assert len(fake_providers.requests(*creates)) == 2
    first, second = fake_providers.state.predictions  # in order of creation
    assert record["providerJobId"] == second
    assert [sent.path for sent in fake_providers.requests("POST", "/replicate/v1/predictions/")] == [
        f"/replicate/v1/predictions/{first}/cancel"
    ]
    downloads = [sent.path for sent in fake_providers.requests("GET", "/outputs/")]
    assert downloads == [f"/outputs/{second}-out-0.png"]
    assert record["imageUrl"]


async def test_a_prediction_whose_jobs_workflow_was_terminated_is_cancelled_when_the_sweep_ends_the_job(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.options.step_seconds = 10.0  # the prediction runs on at Replicate while its workflow is gone
    settings = make_settings(provider_settings, WORKFLOW_CHECK_SECONDS=0.5, SWEEP_INTERVAL_SECONDS=0.2, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        started = await stack.start("a lighthouse at dusk", provider="replicate", model=REPLICATE_MODEL)

        async def attached() -> str | None:
            provider_job_id: str | None = (await stack.job(started["jobId"])).get("providerJobId")
            return provider_job_id

        prediction_id = await eventually(attached, what="the job's prediction to be recorded")
        await stack.client.get_workflow_handle(started["jobId"]).terminate(reason="an operator stopped it")
        record = await stack.wait(started["jobId"])
        cancels = ("POST", f"/replicate/v1/predictions/{prediction_id}/cancel")
        await eventually(lambda: fake_providers.requests(*cancels), what="the prediction's cancel to reach Replicate")
        cleanup = temporal_client.get_workflow_handle(f"{started['jobId']}-provider-cancel")
        cancelled = await asyncio.wait_for(cleanup.result(), timeout=30)  # while this stack's worker runs it

    assert (record["status"], record["errorCode"]) == ("failed", "WorkflowGone"), record
    assert cancelled is True
    assert len(fake_providers.requests(*cancels)) == 1
    assert fake_providers.state.predictions[prediction_id]["status"] == "canceled"


async def test_a_webhook_while_temporal_is_down_is_answered_at_once_and_reaches_the_job_once_it_is_back(
    provider_settings: Settings,
    fake_providers: FakeProviders,
    tmp_path: Path,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    fake_providers.options.webhooks = False
    port, database = free_port(), tmp_path / "temporal.sqlite"
    settings = make_settings(
        provider_settings,
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        HANDOFF_GRACE_SECONDS=1.0,
        SWEEP_INTERVAL_SECONDS=0.5,
        **NO_POLLING,
    )
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as api:
        async with dedicated_temporal(port=port, database=database) as first:
            stack = Stack(settings=settings, base_url=base_url, api=api, client=first.client)
            async with running_workers(first.client, settings):
                started = await start_replicate_job(stack)
                prediction = json.dumps(await finished_prediction(fake_providers)).encode()
        webhook_id = f"msg_{uuid.uuid4().hex}"
        url = hook_path(settings, "replicate", started["jobId"])
        asked_at = time.monotonic()
        taken = await api.post(url, content=prediction, headers=signed_headers(prediction, webhook_id=webhook_id))
        taken_after = time.monotonic() - asked_at
        # The provider, not having heard back in time, sends the same message again (signed anew).
        repeat = await api.post(url, content=prediction, headers=signed_headers(prediction, webhook_id=webhook_id))

        async with dedicated_temporal(port=port, database=database) as second, running_workers(second.client, settings):
            record = await stack.wait(started["jobId"])
            delivered = signals(await history_events(second.client, started["jobId"]))

    assert taken.status_code == 200 and taken.json() == {"status": "accepted"}, taken.text
    # The answer waits on the database, never on Temporal: a signal tried against the stopped server would hang in
    # the client's connection retries far longer. The bound is loose because a loaded CI machine takes 1-2 s here.
    assert taken_after < 5.0
    assert repeat.status_code == 200 and repeat.json() == {"status": "duplicate"}, repeat.text
    assert record["status"] == "completed", record
    assert [signal["delivery_id"] for signal in delivered] == [webhook_id]
    assert fake_providers.requests("GET", POLLS) == []
    assert await pending_signal_count(db_sessions, started["jobId"]) == 0


async def pending_signal_count(sessions: async_sessionmaker[AsyncSession], job_id: str) -> int:
    async with sessions() as session:
        found = await session.execute(text("SELECT count(*) FROM pending_signals WHERE run_id = :id"), {"id": job_id})
        return int(found.scalar_one())


async def test_api_keys_protect_job_routes_while_webhooks_still_work(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    settings = make_settings(provider_settings, API_KEYS=["test-api-key"], **NO_POLLING)
    job = {"workflowId": "canvas-keys", "nodeId": "n1", "provider": "replicate", "promptSpec": {"basePrompt": "keys"}}
    async with running_stack(settings, temporal_client) as stack:
        without_key = [
            await stack.api.post("/v1/jobs", json=job),
            await stack.api.get("/v1/jobs"),
            await stack.api.get("/v1/canvases/canvas-keys/nodes"),
            await stack.api.post("/v1/jobs", json=job, headers={"authorization": "Bearer wrong-key"}),
        ]
        health = await stack.api.get("/healthz")
        stack.api.headers["authorization"] = "Bearer test-api-key"
        started = await start_replicate_job(stack)
        record = await stack.wait(started["jobId"])

    for answer in without_key:
        assert answer.status_code == 401, answer.text
        assert answer.json()["code"] == "unauthorized"
    assert health.status_code == 200
    assert record["status"] == "completed", record
    assert fake_providers.state.deliveries_sent, "the fake called back"
    assert all("authorization" not in delivery.headers for delivery in fake_providers.state.deliveries_sent)
    assert fake_providers.requests("GET", POLLS) == []


async def test_an_oversized_webhook_body_gets_413(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    settings = make_settings(provider_settings, MAX_WEBHOOK_BYTES=4096)
    body = json.dumps({"id": "p1", "status": "succeeded", "logs": "x" * 5000}).encode()

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    async with running_stack(settings, temporal_client, workers=False) as stack:
        declared = await stack.api.post("/v1/webhooks/replicate/job_x", content=body, headers=signed_headers(body))
        streamed = await stack.api.post("/v1/webhooks/replicate/job_x", content=chunked(), headers=signed_headers(body))
    assert "content-length" not in streamed.request.headers
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.json()["code"] == "payload_too_large"


async def test_midjourney_reports_progress_through_its_tokenised_hook(
    provider_settings: Settings,
    fake_providers: FakeProviders,
    temporal_client: Client,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = make_settings(provider_settings, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        started = await stack.start("a lighthouse at dusk --chaos 5", provider="midjourney")
        record = await stack.wait(started["jobId"])
        node = await stack.node(started["workflowId"], "node-1")

    assert record["status"] == "completed", record
    assert node["data"]["imageUrl"] == record["imageUrl"]
    (submit,) = fake_providers.requests("POST", "/mj/submit/imagine")
    hook = job_webhook_url(settings.WEBHOOK_SECRET, settings.app_url, "midjourney", record["jobId"], 1)
    assert submit.json()["notifyHook"] == hook
    deliveries = fake_providers.state.deliveries_sent
    assert [json.loads(delivery.body)["status"] for delivery in deliveries][-1] == "SUCCESS"
    assert all(delivery.url == submit.json()["notifyHook"] for delivery in deliveries)
    async with db_sessions() as session:
        progress = await session.execute(
            text("SELECT payload->>'progress' FROM run_events WHERE run_id = :id AND kind = 'progress'"),
            {"id": record["jobId"]},
        )
        assert "45.0" in progress.scalars().all()
    assert record["providerJobId"] == json.loads(deliveries[-1].body)["id"]
    assert fake_providers.requests("GET", "/mj/task/") == []


async def test_a_delivery_about_another_jobs_prediction_is_refused_recorded_and_cancels_nothing(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    # Job A's genuine, signed delivery replayed to job B's webhook URL (even with B's own token) must not make B take
    # A's prediction for a stray of its own and cancel it at Replicate.
    fake_providers.options.step_seconds = 0.4
    settings = make_settings(provider_settings, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        job_a = await start_replicate_job(stack)
        job_b = await stack.start("a harbour at dawn", provider="replicate", model=REPLICATE_MODEL, nodeId="node-2")
        for job in (job_a, job_b):
            await wait_until_attached(stack, job["jobId"])
        delivery_a = await eventually(
            lambda: next((d for d in fake_providers.state.deliveries_sent if job_a["jobId"] in d.url), None),
            what="a delivery for job A",
        )
        into_b = await stack.api.post(
            hook_path(settings, "replicate", job_b["jobId"]), content=delivery_a.body, headers=delivery_a.headers
        )
        tokenless = await stack.api.post(
            f"/v1/webhooks/replicate/{job_b['jobId']}", content=delivery_a.body, headers=delivery_a.headers
        )
        records = [await stack.wait(job["jobId"]) for job in (job_a, job_b)]
        refusals = await stack.api.get("/v1/webhooks/refusals")

    assert (into_b.status_code, into_b.json()["code"]) == (409, "webhook_not_for_this_job"), into_b.text
    assert (tokenless.status_code, tokenless.json()["code"]) == (401, "invalid_webhook_signature")
    assert [record["status"] for record in records] == ["completed", "completed"]
    assert not [sent for sent in fake_providers.requests("POST", POLLS) if sent.path.endswith("/cancel")]
    assert refusals.status_code == 200
    # The tokenless delivery is a forgery anyone could send: counted, not kept. The authentic one is kept.
    newest = refusals.json()[0]
    assert (newest["jobId"], newest["code"]) == (job_b["jobId"], "webhook_not_for_this_job")
    assert "another job" in newest["reason"]


async def wait_until_attached(stack: Stack, job_id: str) -> None:
    """Until the job's record names its prediction (recorded as the job's before that)."""

    async def attached() -> bool:
        return bool((await stack.job(job_id)).get("providerJobId"))

    await eventually(attached, what=f"job {job_id} to attach a prediction", timeout=10)


async def test_a_webhook_storm_past_the_in_flight_limit_gets_503_with_retry_after_never_a_dropped_connection(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.options.webhooks = False
    settings = make_settings(provider_settings, WEBHOOK_MAX_IN_FLIGHT=1, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        started = await start_replicate_job(stack)
        await wait_until_attached(stack, started["jobId"])
        prediction = {**fake_providers.state.predictions[(await stack.job(started["jobId"]))["providerJobId"]]}
        url = hook_path(settings, "replicate", started["jobId"])
        bodies = [json.dumps({**prediction, "status": "processing", "logs": f"{i}%"}).encode() for i in range(30)]
        storm = await asyncio.gather(
            *(stack.api.post(url, content=body, headers=signed_headers(body)) for body in bodies)
        )
        shed = [index for index, answer in enumerate(storm) if answer.status_code == 503]
        retried = [
            await stack.api.post(url, content=bodies[index], headers=signed_headers(bodies[index])) for index in shed
        ]

    assert {answer.status_code for answer in storm} <= {200, 503}
    assert shed, "thirty at once past a limit of one: some must be shed"
    for index in shed:
        assert storm[index].json()["code"] == "overloaded"
        assert storm[index].headers["retry-after"] == "2"
    assert [answer.status_code for answer in retried] == [200] * len(shed)


async def test_a_burst_of_webhooks_reaches_every_job_and_leaves_no_signal_pending(
    provider_settings: Settings,
    fake_providers: FakeProviders,
    temporal_client: Client,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    fake_providers.options.webhooks = False
    settings = make_settings(provider_settings, **NO_POLLING)  # the default grace: the sweep stays out of it
    async with running_stack(settings, temporal_client) as stack:
        started = await asyncio.gather(*(start_replicate_job(stack) for _ in range(8)))
        job_ids = [job["jobId"] for job in started]
        await asyncio.gather(*(wait_until_attached(stack, job_id) for job_id in job_ids))
        bodies = [json.dumps(await succeeded_prediction(fake_providers, stack, job_id)).encode() for job_id in job_ids]
        answers = await asyncio.gather(
            *(
                stack.api.post(hook_path(settings, "replicate", job_id), content=body, headers=signed_headers(body))
                for job_id, body in zip(job_ids, bodies, strict=True)
            )
        )
        records = [await stack.wait(job_id) for job_id in job_ids]

        async def none_pending() -> bool:
            return all([await pending_signal_count(db_sessions, job_id) == 0 for job_id in job_ids])

        await eventually(none_pending, what="the sent signals to be forgotten", timeout=5)

    assert [answer.json() for answer in answers] == [{"status": "accepted"}] * len(job_ids)
    assert [record["status"] for record in records] == ["completed"] * len(job_ids)
    assert fake_providers.requests("GET", POLLS) == []


async def succeeded_prediction(fake: FakeProviders, stack: Stack, job_id: str) -> dict[str, Any]:
    """The job's prediction, once the fake has finished it."""
    prediction_id = (await stack.job(job_id))["providerJobId"]

    def done() -> dict[str, Any] | None:
        prediction = fake.state.predictions[prediction_id]
        return {**prediction} if prediction["status"] == "succeeded" else None

    found: dict[str, Any] = await eventually(done, what=f"prediction {prediction_id} to succeed")
    return found


@pytest.mark.parametrize(
    "model",
    [
        "bytedance/sdxl-lightning",
        "black-forest-labs/flux-schnell:" + "5f24084160c9089501c1b3545d9be3c27883ae2239b6f412990e82d4a6210f8f",
    ],
    ids=["unlisted", "pinned-version"],
)
async def test_any_replicate_model_is_taken_and_completes(
    model: str, provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    settings = make_settings(provider_settings, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        started = await stack.start("a lighthouse at dusk", provider="replicate", model=model)
        record = await stack.wait(started["jobId"])
    assert record["status"] == "completed", record
    assert record["model"] == model and record["imageUrl"]
    (create,) = [
        sent for sent in fake_providers.requests("POST", "/replicate/v1/") if not sent.path.endswith("/cancel")
    ]
    name, _, version = model.partition(":")
    if version:
        assert create.path == "/replicate/v1/predictions" and create.json()["version"] == version
    else:
        assert create.path == f"/replicate/v1/models/{name}/predictions"


async def test_a_delivery_taken_but_never_signalled_reaches_its_job_through_the_sweep(
    provider_settings: Settings,
    fake_providers: FakeProviders,
    temporal_client: Client,
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    fake_providers.options.webhooks = False
    settings = make_settings(provider_settings, HANDOFF_GRACE_SECONDS=0.0, SWEEP_INTERVAL_SECONDS=0.2, **NO_POLLING)
    async with running_stack(settings, temporal_client) as stack:
        started = await start_replicate_job(stack)
        prediction = await finished_prediction(fake_providers)
        # What an API killed between its commit and its signal leaves: the delivery recorded, its signal pending.
        event = ProviderEvent(
            status="succeeded",
            output_urls=list(prediction["output"]),
            delivery_id=f"msg_{uuid.uuid4().hex}",
            provenance=Provenance(provider_job_id=prediction["id"]),
        )
        delivery = Delivery(
            job_id=started["jobId"],
            provider="replicate",
            provider_job_id=prediction["id"],
            dedupe_key=f"webhook:{event.delivery_id}",
            timeline='{"message": "replicate reported succeeded"}',
            event=event_json(event),
        )
        async with db_sessions() as session, session.begin():
            target = await deliveries.take_delivery(session, delivery=delivery)
        assert target is not None and target.signal_id is not None
        record = await stack.wait(started["jobId"])

    assert record["status"] == "completed", record
    assert record["imageUrl"]
    assert await pending_signal_count(db_sessions, started["jobId"]) == 0
    assert fake_providers.requests("GET", POLLS) == []


async def test_a_signed_body_of_100000_brackets_gets_422_whatever_its_content_type(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.options.webhooks = False
    settings = make_settings(provider_settings, **NO_POLLING)
    body = b"[" * 100_000
    async with running_stack(settings, temporal_client) as stack:
        started = await start_replicate_job(stack)
        url = hook_path(settings, "replicate", started["jobId"])
        answers = [
            await stack.api.post(url, content=body, headers={**signed_headers(body), "content-type": content_type})
            for content_type in ("application/json", "text/plain")
        ]
    for answer in answers:
        assert (answer.status_code, answer.json()["code"]) == (422, "json_too_deep"), answer.text


async def test_forged_webhooks_are_counted_and_store_nothing(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    """300 deliveries with wrong URL tokens: each 401, none kept as a refusal row, all counted in /metrics."""
    async with running_stack(provider_settings, temporal_client, workers=False) as stack:
        before = (await stack.api.get("/v1/webhooks/refusals", params={"limit": 1000})).json()
        forged_before = forged_count((await stack.api.get("/metrics")).text)
        body = b'{"id": "p1", "status": "succeeded"}'
        answers = await asyncio.gather(
            *(
                stack.api.post(
                    f"/v1/webhooks/replicate/job_{index:032x}?attempt=1&token={'0' * 64}",
                    content=body,
                    headers=signed_headers(body),
                )
                for index in range(300)
            )
        )
        after = (await stack.api.get("/v1/webhooks/refusals", params={"limit": 1000})).json()
        forged_after = forged_count((await stack.api.get("/metrics")).text)
    assert {answer.status_code for answer in answers} == {401}
    assert after == before
    assert forged_after - forged_before == 300


def forged_count(exposition: str) -> float:
    for line in exposition.splitlines():
        if line.startswith('imagejobs_webhooks_total{provider="replicate",result="forged"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
