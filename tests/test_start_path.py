"""POST /v1/jobs converges from every crash point, and concurrent repeats of one key never mix up requests."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.routes.jobs import job_from_request
from core import runs
from core.db import transaction
from core.jobs import new_job_id
from models.schemas import StartImageJobRequest
from providers.registry import build_providers
from tests.fixtures.stack import Stack
from worker import sweep_unstarted_runs, worker_resources


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
    state = SimpleNamespace(settings=stack.settings, providers=build_providers(stack.settings))
    request = StartImageJobRequest.model_validate(body)
    job_id = new_job_id(stack.settings.WEBHOOK_SECRET, key)
    job, effective = job_from_request(state, request, job_id)  # type: ignore[arg-type]
    async with transaction(sessions) as session:
        assert (await runs.record_run(session, job, effective=effective)).created
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


async def test_the_worker_sweep_starts_runs_nobody_repeats(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    job_id = await record_without_starting(
        stack, db_sessions, start_body("c-" + uuid.uuid4().hex[:8]), uuid.uuid4().hex
    )
    async with db_sessions() as session, session.begin():
        await session.execute(
            text("UPDATE runs SET created_at = now() - interval '5 minutes' WHERE id = :id"), {"id": job_id}
        )
    async with worker_resources(stack.settings) as resources:
        assert await sweep_unstarted_runs(stack.client, stack.settings, resources) >= 1
    assert (await stack.wait(job_id))["status"] == "completed"


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
