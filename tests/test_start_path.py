"""POST /v1/jobs converges from every crash point, and concurrent repeats of one key never mix up requests."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.routes.jobs import job_from_request
from core.config import Settings
from core.db import session_factory, transaction
from handoff.starts import job_from_run, new_job_id, start_job
from handoff.sweep import Handoff, SentSignals, TenantSlots, backlog
from models.schemas import StartImageJobRequest
from models.tenancy import DEFAULT_TENANT
from providers.discovery import build_directory
from providers.registry import build_providers
from store import runs
from tests.fakes.server import free_port
from tests.fixtures.providers import dedicated_temporal
from tests.fixtures.stack import Stack, make_settings, running_api, running_stack, running_workers, was_cancelled
from tests.helpers import eventually
from worker import sweep_once, worker_resources


def start_body(canvas_id: str, node_id: str = "node-1") -> dict[str, Any]:
    return {
        "workflowId": canvas_id,
        "nodeId": node_id,
        "provider": "local",
        "promptSpec": {"basePrompt": "a harbour", "size": "64x64"},
    }


async def record_without_starting(
    stack: Stack, sessions: async_sessionmaker[AsyncSession], body: dict[str, Any], key: str
) -> str:
    """What an API killed between its commit and its start_workflow leaves: the run, and no workflow."""
    state = SimpleNamespace(
        settings=stack.settings, providers=build_providers(stack.settings), models=build_directory(stack.settings)
    )
    request = StartImageJobRequest.model_validate(body)
    job_id = new_job_id(stack.settings.WEBHOOK_SECRET, key, scope=DEFAULT_TENANT)
    job, effective = job_from_request(state, request, job_id, canvas=request.workflow_id)  # type: ignore[arg-type]
    async with transaction(sessions) as session:
        assert (await runs.record_run(session, job=job, effective=effective)).created
    return job.job_id


async def assert_no_workflow(client: Client, job_id: str) -> None:
    try:
        await client.get_workflow_handle(job_id).describe()
    except RPCError as error:
        assert error.status == RPCStatusCode.NOT_FOUND
    else:
        raise AssertionError(f"{job_id} has a workflow")


async def test_a_repeat_starts_the_workflow_a_crash_lost(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    body = start_body("c-" + uuid.uuid4().hex[:8])
    key = "lost-start-" + uuid.uuid4().hex
    job_id = await record_without_starting(stack, db_sessions, body, key)
    await assert_no_workflow(stack.client, job_id)

    repeat = await stack.api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})

    assert repeat.status_code == 202, repeat.text
    assert repeat.headers["idempotent-replayed"] == "true"
    assert repeat.json()["jobId"] == job_id
    assert (await stack.wait(job_id))["status"] == "completed"
    assert await start_is_confirmed(db_sessions, job_id)


async def test_the_worker_sweep_starts_runs_nobody_repeats(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # No workers until the sweep under test has run: theirs would race it for the run. Once it has, their own sweep
    # (once at their start, then not for an hour) finds nothing left, and they run the job it started.
    settings = make_settings(stack_settings, SWEEP_INTERVAL_SECONDS=3600.0)
    async with running_stack(settings, temporal_client, workers=False) as stack:
        job_id = await record_without_starting(
            stack, db_sessions, start_body("c-" + uuid.uuid4().hex[:8]), uuid.uuid4().hex
        )
        async with db_sessions() as session, session.begin():
            await session.execute(
                text("UPDATE runs SET created_at = now() - interval '5 minutes' WHERE id = :id"), {"id": job_id}
            )
        async with worker_resources(stack.settings) as resources:
            assert await sweep_once(stack.client, stack.settings, resources) >= 1
        async with running_workers(stack.client, stack.settings):
            assert (await stack.wait(job_id))["status"] == "completed"


async def test_a_start_the_api_did_not_live_to_confirm_is_confirmed_by_the_workflow_itself(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # An API killed after start_workflow and before its confirmation: the job runs, and soon leaves `pending`,
    # past what the sweep looks at; its start must not stay unconfirmed (it would count as handoff backlog forever).
    job_id = await record_without_starting(
        stack, db_sessions, start_body("c-" + uuid.uuid4().hex[:8]), uuid.uuid4().hex
    )
    async with db_sessions() as session:
        run = await runs.get_run(session, job_id=job_id)
    assert run is not None
    await start_job(stack.client, stack.settings, job_from_run(run, asynchronous=False, settings=stack.settings))

    assert (await stack.wait(job_id))["status"] == "completed"
    assert await start_is_confirmed(db_sessions, job_id)


async def test_the_handoff_backlog_counts_the_starts_the_sweep_can_still_make(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    before = (await backlog(db_sessions))["job_starts"]
    job_id = await record_without_starting(
        stack, db_sessions, start_body("c-" + uuid.uuid4().hex[:8]), uuid.uuid4().hex
    )
    assert (await backlog(db_sessions))["job_starts"] == before + 1
    async with db_sessions() as session, session.begin():  # ended without a confirmed start (a refused start)
        await session.execute(text("UPDATE runs SET status = 'failed' WHERE id = :id"), {"id": job_id})
    assert (await backlog(db_sessions))["job_starts"] == before


async def test_concurrent_repeats_of_one_key_answer_their_own_job_or_409(stack: Stack) -> None:
    canvas_id = "c-" + uuid.uuid4().hex[:8]
    key = "burst-" + uuid.uuid4().hex
    bodies = [start_body(canvas_id, "same") for _ in range(10)] + [start_body(canvas_id, f"n{i}") for i in range(10)]

    answers = await asyncio.gather(
        *(stack.api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key}) for body in bodies)
    )

    accepted = [(body, answer) for body, answer in zip(bodies, answers, strict=True) if answer.status_code == 202]
    refused = [answer for answer in answers if answer.status_code != 202]
    assert all(answer.status_code == 409 for answer in refused), [answer.text for answer in refused]
    assert accepted, "no request was accepted"
    for body, answer in accepted:
        assert answer.json()["nodeId"] == body["nodeId"], "an answer described another request's job"
    assert len({answer.json()["jobId"] for _, answer in accepted}) == 1
    first_answers = [answer for _, answer in accepted if "idempotent-replayed" not in answer.headers]
    assert len(first_answers) == 1
    if accepted[0][0]["nodeId"] == "same":
        assert len(accepted) == 10  # every identical body got the same job
    job_id = accepted[0][1].json()["jobId"]
    assert (await stack.wait(job_id))["status"] == "completed"


async def test_a_job_posted_while_temporal_is_down_is_accepted_and_runs_once_temporal_is_back(
    stack_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(
        stack_settings, TEMPORAL_ADDRESS=f"127.0.0.1:{port}", HANDOFF_GRACE_SECONDS=1.0, SWEEP_INTERVAL_SECONDS=0.5
    )
    async with running_api(settings) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as api:
        asked_at = time.monotonic()
        answer = await api.post("/v1/jobs", json=start_body("c-" + uuid.uuid4().hex[:8]))
        answered_after = time.monotonic() - asked_at
        assert answer.status_code == 202, answer.text
        assert answered_after < 1.0  # the answer waits on the database, never on Temporal
        async with dedicated_temporal(port=port, database=tmp_path / "temporal.sqlite") as temporal:
            stack = Stack(settings=settings, base_url=base_url, api=api, client=temporal.client)
            async with running_workers(temporal.client, settings):
                record = await stack.wait(answer.json()["jobId"], timeout=60)
    assert record["status"] == "completed", record


async def test_cancelling_a_job_whose_start_is_still_to_come_cancels_it(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    body = start_body("c-" + uuid.uuid4().hex[:8])
    job_id = await record_without_starting(stack, db_sessions, body, uuid.uuid4().hex)

    cancelled = await stack.api.post(f"/v1/jobs/{job_id}/cancel")

    assert cancelled.status_code == 202, cancelled.text
    record = await stack.wait(job_id)
    assert was_cancelled(record), record
    node = await stack.node(body["workflowId"], body["nodeId"])
    assert "status" not in node["data"]  # as before the job: it never had one


class RefusingClient:
    """A Temporal client whose every start is refused for a reason no retry mends."""

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError("the input cannot be encoded")


async def test_a_start_refused_for_good_fails_the_job_instead_of_leaving_it_pending(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    body = start_body("c-" + uuid.uuid4().hex[:8])
    job_id = await record_without_starting(stack, db_sessions, body, uuid.uuid4().hex)
    async with db_sessions() as session:
        run = await runs.get_run(session, job_id=job_id)
    assert run is not None
    job = job_from_run(run, asynchronous=False, settings=stack.settings)

    async def refusing() -> Client:
        return RefusingClient()  # type: ignore[return-value]

    handoff = Handoff(refusing, stack.settings, db_sessions)
    await handoff.start(job)
    await handoff.aclose()

    record = await stack.job(job_id)
    assert record["status"] == "failed", record
    assert record["errorCode"] == "StartRefused"
    assert "cannot be encoded" in record["error"]
    assert (await stack.node(body["workflowId"], body["nodeId"]))["data"]["status"] == "error"
    assert await start_is_confirmed(db_sessions, job_id), "a job failed for good is not left for the sweep"


async def start_is_confirmed(sessions: async_sessionmaker[AsyncSession], job_id: str) -> bool:
    async with sessions() as session:
        found = await session.execute(text("SELECT workflow_started_at FROM runs WHERE id = :id"), {"id": job_id})
        return found.scalar_one() is not None


async def test_one_tenants_burst_of_handoffs_leaves_slots_for_another_tenant() -> None:
    slots = TenantSlots(total=4, per_tenant=2)
    release = asyncio.Event()
    held: list[str] = []

    async def hand_off(tenant: str) -> None:
        async with slots.slot(tenant):
            held.append(tenant)
            await release.wait()

    async def three_under_way() -> bool:
        return len(held) == 3

    burst = [asyncio.create_task(hand_off("t_burst")) for _ in range(5)]
    single = asyncio.create_task(hand_off("t_single"))
    await eventually(three_under_way, what="three handoffs under way")
    assert sorted(held) == ["t_burst", "t_burst", "t_single"], "the burst took more than its share, or the other none"
    release.set()
    await asyncio.gather(*burst, single)
    assert len(held) == 6 and slots._lines == {}, "a finished line kept its memory"


async def test_signals_sent_together_are_forgotten_in_one_statement(db_engine: AsyncEngine) -> None:
    forgotten: list[list[int]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith("DELETE FROM pending_signals"):
            forgotten.append(sorted(parameters["ids"]))

    event.listen(db_engine.sync_engine, "before_cursor_execute", note)
    try:
        sent = SentSignals(session_factory(db_engine))
        for signal_id in range(1, 51):  # sent while nothing is being forgotten yet: one batch
            sent.forget(signal_id)
        await asyncio.sleep(0)  # the first DELETE is under way; these wait for the next
        sent.forget(51)
        sent.forget(52)
        await sent.aclose(timeout=5)
    finally:
        event.remove(db_engine.sync_engine, "before_cursor_execute", note)
    assert forgotten == [list(range(1, 51)), [51, 52]]


async def test_a_batch_the_database_refuses_is_left_to_the_sweep_and_the_next_batch_goes_on(
    db_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    sessions = session_factory(db_engine)
    opened: list[int] = []

    def away_once() -> AsyncSession:
        opened.append(len(opened))
        if len(opened) == 1:
            raise ConnectionRefusedError("the database is away")
        return sessions()

    sent = SentSignals(away_once)  # type: ignore[arg-type]
    sent.forget(1)
    await sent.aclose(timeout=5)
    sent.forget(2)
    await sent.aclose(timeout=5)
    assert opened == [0, 1], "the batch after the refused one was not tried"
    assert "1 sent signals left to the sweep" in caplog.text
