"""Jobs whose workflows stopped without ending them are found by the sweep and ended; live ones are left alone."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.config import Settings
from core.db import session_factory, transaction
from handoff.ends import end_vanished
from handoff.starts import start_job
from models.payloads import ImageJobInput, PromptSpec, RunTransition
from models.vocabulary import JobStatus
from store import runs
from tests.fixtures.stack import make_settings


async def started_job(sessions: async_sessionmaker[AsyncSession], *, status: JobStatus | None = None) -> ImageJobInput:
    """A job recorded as its workflow records it, asked about long ago (so first in the sweep's order)."""
    job = ImageJobInput(
        job_id=f"job_{uuid.uuid4().hex}",
        canvas_id=f"ends-{uuid.uuid4().hex[:8]}",
        node_id="n1",
        provider="local",
        model="procedural",
        spec=PromptSpec(prompt="a lighthouse"),
    )
    async with transaction(sessions) as session:
        assert (await runs.record_run(session, job=job, workflow_started=True)).created
        if status is not None:
            assert await runs.transition(session, change=RunTransition(job_id=job.job_id, status=status))
        await session.execute(
            text("UPDATE runs SET workflow_started_at = now() - interval '10 years' WHERE id = :id"), {"id": job.job_id}
        )
    return job


async def due_now(sessions: async_sessionmaker[AsyncSession]) -> set[str]:
    async with transaction(sessions) as session:
        return {run.job_id for run in await runs.due_for_workflow_check(session, every_seconds=60, limit=10_000)}


async def test_unfinished_jobs_are_due_once_a_period_and_never_to_two_sweeps_at_once(db_engine: AsyncEngine) -> None:
    sessions = session_factory(db_engine)
    pending, running = await started_job(sessions), await started_job(sessions, status=JobStatus.RUNNING)
    ended = await started_job(sessions, status=JobStatus.COMPLETED)
    ours = {pending.job_id, running.job_id, ended.job_id}

    async with transaction(sessions) as first:  # a sweep that has taken its batch and not yet committed
        taken = {run.job_id for run in await runs.due_for_workflow_check(first, every_seconds=60, limit=10_000)}
        assert taken & ours == {pending.job_id, running.job_id}
        assert not await due_now(sessions) & ours, "a second sweep took runs the first holds"
    assert not await due_now(sessions) & ours, "runs asked about just now are due again at once"


async def test_the_sweep_ends_jobs_whose_workflows_are_gone_and_leaves_running_ones(
    db_engine: AsyncEngine, stack_settings: Settings, temporal_client: Client
) -> None:
    sessions = session_factory(db_engine)
    settings = make_settings(stack_settings, WORKFLOW_CHECK_SECONDS=60.0)
    gone, alive = await started_job(sessions), await started_job(sessions, status=JobStatus.RUNNING)
    await start_job(temporal_client, settings, alive)  # its queue has no worker: it runs, and waits
    try:
        assert await end_vanished(temporal_client, settings, sessions) >= 1
        async with sessions() as session:
            ended, running = [await runs.get_run(session, job_id=job.job_id) for job in (gone, alive)]
    finally:
        await temporal_client.get_workflow_handle(alive.job_id).terminate(reason="the test is over")
    assert ended is not None and running is not None
    assert (ended.status, ended.error_code) == ("failed", "WorkflowGone")
    assert ended.error is not None and "no longer exists in Temporal" in ended.error
    assert running.status == "running"


class TemporalAway:
    """A client whose questions fail as they do while the Temporal server cannot be reached."""

    def get_workflow_handle(self, workflow_id: str) -> TemporalAway:
        return self

    async def describe(self) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")


async def test_jobs_taken_for_a_check_temporal_could_not_answer_are_due_again_at_once(
    db_engine: AsyncEngine, stack_settings: Settings
) -> None:
    sessions = session_factory(db_engine)
    settings = make_settings(stack_settings, WORKFLOW_CHECK_SECONDS=60.0)
    waiting = await started_job(sessions)
    asked = text("SELECT workflow_checked_at FROM runs WHERE id = :id")
    async with transaction(sessions) as session:  # asked long ago: first in the sweep's batch, and marked
        await session.execute(
            text("UPDATE runs SET workflow_checked_at = now() - interval '9 years' WHERE id = :id"),
            {"id": waiting.job_id},
        )

    with pytest.raises(RPCError):
        await end_vanished(TemporalAway(), settings, sessions)  # type: ignore[arg-type]

    async with sessions() as session:
        run = await runs.get_run(session, job_id=waiting.job_id)
        last_asked = (await session.execute(asked, {"id": waiting.job_id})).scalar_one()
    assert last_asked is None, "the sweep did not take the job, or kept its stamp"
    assert waiting.job_id in await due_now(sessions), "a job nobody could ask about waits a whole period"
    assert run is not None and run.status == "pending"


@dataclass(frozen=True)
class Described:
    status: WorkflowExecutionStatus


class CancelCannotStart:
    """A client that finds one job's workflow gone (and every other running), and then cannot start a workflow: the
    server went away between the two calls."""

    def __init__(self, gone: str) -> None:
        self.gone = gone
        self.asked = ""

    def get_workflow_handle(self, workflow_id: str) -> CancelCannotStart:
        self.asked = workflow_id
        return self

    async def describe(self) -> Described:
        if self.asked == self.gone:
            raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
        return Described(WorkflowExecutionStatus.RUNNING)

    async def start_workflow(self, *args: Any, **kwargs: Any) -> None:
        raise RPCError("connection refused", RPCStatusCode.UNAVAILABLE, b"")


async def test_a_job_is_not_ended_before_its_provider_jobs_cancel_has_started(
    db_engine: AsyncEngine, stack_settings: Settings, temporal_client: Client
) -> None:
    sessions = session_factory(db_engine)
    settings = make_settings(stack_settings, WORKFLOW_CHECK_SECONDS=60.0)
    submitted = await started_job(sessions, status=JobStatus.RUNNING)
    async with transaction(sessions) as session:
        await runs.set_provider_job(session, job_id=submitted.job_id, provider_job_id="pred-left-behind", effective={})
        await session.execute(  # asked longest ago of all: first in the sweep's batch
            text("UPDATE runs SET workflow_checked_at = now() - interval '20 years' WHERE id = :id"),
            {"id": submitted.job_id},
        )

    with pytest.raises(RPCError):
        await end_vanished(CancelCannotStart(gone=submitted.job_id), settings, sessions)  # type: ignore[arg-type]
    async with sessions() as session:
        left = await runs.get_run(session, job_id=submitted.job_id)
    assert left is not None and left.status == "running", "the job ended, and nothing would cancel its provider job"

    cancel = temporal_client.get_workflow_handle(f"{submitted.job_id}-provider-cancel")
    try:
        assert await end_vanished(temporal_client, settings, sessions) >= 1  # Temporal is back: due again at once
        described = await cancel.describe()
    finally:
        with contextlib.suppress(RPCError):  # no worker here runs it
            await cancel.terminate(reason="the test is over")
    async with sessions() as session:
        ended = await runs.get_run(session, job_id=submitted.job_id)
    assert ended is not None and (ended.status, ended.error_code) == ("failed", "WorkflowGone")
    assert described.workflow_type == "ProviderCancelWorkflow"
