"""A job's database steps against PostgreSQL: what each writes, and in how many statements.

Every statement a step sends is a round trip the worker waits for while it holds a workflow task, so the common
steps are one statement each; these tests count them on the engine.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from activities.runs import RunActivities
from core.db import autocommit_session_factory, session_factory, transaction
from models.payloads import ImageJobInput, ProgressUpdate, PromptSpec, RunTransition
from models.tenancy import canvas_key
from models.vocabulary import JobStatus, OutboundEvent
from store import outbound, runs, tenants


@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """The statements the engine sends meanwhile, with BEGIN for each transaction opened outside autocommit (where
    psycopg sends it before the first statement)."""
    sent: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    def note_begin(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            sent.append("BEGIN")

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    event.listen(engine.sync_engine, "begin", note_begin)
    try:
        yield sent
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)
        event.remove(engine.sync_engine, "begin", note_begin)


def steps(engine: AsyncEngine, *, default_cap: int | None = None, client: Client | None = None) -> RunActivities:
    """The worker's steps, on its two session factories (and its Temporal client, to wake jobs in line)."""
    return RunActivities(
        session_factory(engine),
        autocommit_sessions=autocommit_session_factory(engine),
        default_max_concurrent=default_cap,
        client=client,
    )


async def recorded_job(sessions: async_sessionmaker[AsyncSession], tenant_id: str = "default") -> ImageJobInput:
    job = ImageJobInput(
        job_id=f"job_{uuid.uuid4().hex}",
        canvas_id=canvas_key(tenant_id, f"steps-{uuid.uuid4().hex[:8]}"),
        node_id="n1",
        provider="local",
        model="procedural",
        spec=PromptSpec(prompt="a lighthouse"),
    )
    async with transaction(sessions) as session:
        assert (await runs.record_run(session, job=job)).created
    return job


async def state_of(sessions: async_sessionmaker[AsyncSession], job: ImageJobInput) -> tuple[str, str, int, list[str]]:
    """The run's status, its node's status and version, and the messages of its events after `created`."""
    async with sessions() as session:
        run_status = (await session.execute(text("SELECT status FROM runs WHERE id = :id"), {"id": job.job_id})).one()
        node = (
            await session.execute(
                text("SELECT node_data->>'status', version FROM workflow_nodes WHERE canvas_id = :c AND id = :n"),
                {"c": job.canvas_id, "n": job.node_id},
            )
        ).one()
        messages = (
            await session.execute(
                text("SELECT payload->>'message' FROM run_events WHERE run_id = :id AND kind <> 'created' ORDER BY id"),
                {"id": job.job_id},
            )
        ).scalars()
    return run_status[0], node[0], node[1], list(messages)


async def test_a_job_without_a_cap_moves_to_running_with_its_node_in_one_statement(db_engine: AsyncEngine) -> None:
    sessions = session_factory(db_engine)
    job = await recorded_job(sessions)
    with statements_sent(db_engine) as sent:
        assert await steps(db_engine).mark_running(job) is True
    assert len(sent) == 1, sent
    status, node_status, version, messages = await state_of(sessions, job)
    assert (status, node_status, messages) == ("running", "running", ["Generating with local:procedural"])

    # A retry (the attempt's answer was lost) changes nothing, and still says the job may run.
    assert await steps(db_engine).mark_running(job) is True
    assert await state_of(sessions, job) == (status, node_status, version, messages)


async def test_a_capped_tenants_job_waits_at_its_cap_and_runs_when_a_slot_frees(db_engine: AsyncEngine) -> None:
    sessions = session_factory(db_engine)
    async with transaction(sessions) as session:
        tenant = await tenants.create_tenant(session, name="capped")
        change = tenants.TenantChange(given=frozenset({"max_concurrent_jobs"}), max_concurrent_jobs=1)
        await tenants.update_tenant(session, tenant=tenant, change=change)
    first, second = await recorded_job(sessions, tenant.id), await recorded_job(sessions, tenant.id)

    assert await steps(db_engine).mark_running(first) is True
    assert await steps(db_engine).mark_running(second) is False
    assert (await state_of(sessions, second))[:2] == ("pending", "pending")

    await steps(db_engine).complete_run(RunTransition(job_id=first.job_id, status=JobStatus.COMPLETED))
    assert await steps(db_engine).mark_running(second) is True
    assert (await state_of(sessions, second))[:2] == ("running", "running")


async def test_an_end_names_the_oldest_job_in_its_tenants_line_and_never_another_tenants(
    db_engine: AsyncEngine,
) -> None:
    sessions = session_factory(db_engine)
    capped = tenants.TenantChange(given=frozenset({"max_concurrent_jobs"}), max_concurrent_jobs=1)
    async with transaction(sessions) as session:
        acme, globex = (
            await tenants.create_tenant(session, name="acme"),
            await tenants.create_tenant(session, name="globex"),
        )
        for tenant in (acme, globex):
            await tenants.update_tenant(session, tenant=tenant, change=capped)
    running, first_in_line, second_in_line = [await recorded_job(sessions, acme.id) for _ in range(3)]
    other_running, other_in_line = [await recorded_job(sessions, globex.id) for _ in range(2)]
    for job in (running, other_running):
        assert await steps(db_engine).mark_running(job) is True
    for job in (first_in_line, other_in_line, second_in_line):
        assert await steps(db_engine).mark_running(job) is False
    # Asking again keeps a job's place in line.
    assert await steps(db_engine).mark_running(first_in_line) is False

    async def end(job: ImageJobInput) -> str | None:
        async with transaction(sessions) as session:
            ended = await runs.transition(session, change=RunTransition(job_id=job.job_id, status=JobStatus.COMPLETED))
        assert ended is not None
        return ended.next_in_line

    assert await end(running) == first_in_line.job_id
    assert await steps(db_engine).mark_running(first_in_line) is True
    assert await end(first_in_line) == second_in_line.job_id
    assert await steps(db_engine).mark_running(second_in_line) is True
    assert await end(second_in_line) is None
    assert await end(other_running) == other_in_line.job_id


async def in_line(sessions: async_sessionmaker[AsyncSession], job: ImageJobInput) -> bool:
    async with sessions() as session:
        query = text("SELECT slot_wait_since IS NOT NULL FROM runs WHERE id = :id")
        return bool((await session.execute(query, {"id": job.job_id})).scalar_one())


async def test_an_end_takes_jobs_whose_workflows_are_gone_out_of_their_line(
    db_engine: AsyncEngine, temporal_client: Client
) -> None:
    sessions = session_factory(db_engine)
    capped = tenants.TenantChange(given=frozenset({"max_concurrent_jobs"}), max_concurrent_jobs=1)
    async with transaction(sessions) as session:
        acme, globex = [await tenants.create_tenant(session, name=name) for name in ("acme", "globex")]
        for tenant in (acme, globex):
            await tenants.update_tenant(session, tenant=tenant, change=capped)
    # Recorded jobs without workflows: as if terminated from outside while they waited.
    running, gone, also_gone = [await recorded_job(sessions, acme.id) for _ in range(3)]
    other_running, other_gone = [await recorded_job(sessions, globex.id) for _ in range(2)]
    worker = steps(db_engine, client=temporal_client)
    for job in (running, other_running):
        assert await worker.mark_running(job) is True
    for job in (gone, also_gone, other_gone):
        assert await worker.mark_running(job) is False
    assert [await in_line(sessions, job) for job in (gone, also_gone, other_gone)] == [True, True, True]

    assert await worker.complete_run(RunTransition(job_id=running.job_id, status=JobStatus.COMPLETED)) is True
    assert [await in_line(sessions, job) for job in (gone, also_gone, other_gone)] == [False, False, True]
    assert (await state_of(sessions, gone))[0] == "pending"  # out of the line, not ended: that is not the line's call


async def test_the_workers_default_cap_holds_for_tenants_without_their_own(db_engine: AsyncEngine) -> None:
    sessions = session_factory(db_engine)
    async with transaction(sessions) as session:
        tenant = await tenants.create_tenant(session, name="defaulted")
    first, second = await recorded_job(sessions, tenant.id), await recorded_job(sessions, tenant.id)
    assert await steps(db_engine, default_cap=1).mark_running(first) is True
    assert await steps(db_engine, default_cap=1).mark_running(second) is False


async def test_an_end_is_told_and_owes_its_deliveries_in_one_statement(db_engine: AsyncEngine) -> None:
    sessions = session_factory(db_engine)
    async with transaction(sessions) as session:
        tenant = await tenants.create_tenant(session, name="hooked")
        endpoint = await outbound.create_endpoint(
            session, tenant_id=tenant.id, url="https://app.example/hooks", events=None, description=None
        )
    job = await recorded_job(sessions, tenant.id)
    assert await steps(db_engine).mark_running(job) is True

    change = RunTransition(job_id=job.job_id, status=JobStatus.FAILED, error="The provider refused", error_code="X")
    async with transaction(autocommit_session_factory(db_engine)) as session:
        with statements_sent(db_engine) as sent:
            ended = await runs.transition(session, change=change)
    assert len(sent) == 1, sent
    assert ended is not None and len(ended.outbound_delivery_ids) == 1
    async with sessions() as session:
        owed = (
            await session.execute(
                text("SELECT endpoint_id, event_type, subject_id FROM outbound_deliveries WHERE id = :id"),
                {"id": ended.outbound_delivery_ids[0]},
            )
        ).one()
    assert tuple(owed) == (endpoint.id, str(OutboundEvent.JOB_FAILED), job.job_id)
    assert (await state_of(sessions, job))[3] == ["Generating with local:procedural", "The provider refused"]

    # Told once: a repeat moves nothing and owes nothing more.
    async with transaction(sessions) as session:
        assert await runs.transition(session, change=change) is None


async def node_progress(sessions: async_sessionmaker[AsyncSession], job: ImageJobInput) -> tuple[float | None, int]:
    """The progress the job's node shows, and the node's version."""
    async with sessions() as session:
        found = (
            await session.execute(
                text(
                    "SELECT (node_data->>'progress')::float8, version FROM workflow_nodes"
                    " WHERE canvas_id = :c AND id = :n"
                ),
                {"c": job.canvas_id, "n": job.node_id},
            )
        ).one()
    return found[0], found[1]


async def test_progress_is_told_and_shown_in_one_statement_once_and_never_after_the_end(db_engine: AsyncEngine) -> None:
    sessions = session_factory(db_engine)
    job = await recorded_job(sessions)
    assert await steps(db_engine).mark_running(job) is True
    update = ProgressUpdate(
        job_id=job.job_id, canvas_id=job.canvas_id, node_id=job.node_id, progress=40.0, message=None, dedupe_key="p-1"
    )
    with statements_sent(db_engine) as sent:
        await steps(db_engine).record_progress(update)
    assert len(sent) == 1, sent
    shown = await node_progress(sessions, job)
    assert shown[0] == 40.0
    assert (await state_of(sessions, job))[3] == ["Generating with local:procedural", "40%"]

    # The same observation again (a webhook delivered twice): no second event, the node untouched.
    await steps(db_engine).record_progress(update)
    assert await node_progress(sessions, job) == shown
    assert (await state_of(sessions, job))[3] == ["Generating with local:procedural", "40%"]

    # After the end, a late observation changes nothing.
    await steps(db_engine).complete_run(RunTransition(job_id=job.job_id, status=JobStatus.COMPLETED))
    ended = await state_of(sessions, job)
    late = ProgressUpdate(
        job_id=job.job_id, canvas_id=job.canvas_id, node_id=job.node_id, progress=90.0, message="late", dedupe_key="p-2"
    )
    await steps(db_engine).record_progress(late)
    assert await state_of(sessions, job) == ended
