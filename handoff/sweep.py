"""The handoff to Temporal: what a request committed to PostgreSQL, carried to Temporal after the answer.

`POST /v1/jobs` answers once its run is committed, `POST /v1/canvases/{id}/runs` once its canvas run and plan
are, and a webhook once its delivery is (a timeline event and a pending signal): from then on nothing is lost,
whatever crashes. The API process then starts the workflow or sends the signal at once (`Handoff`), with a few
prompt retries. What it leaves undone, because it crashed or Temporal was unreachable, the workers' sweep
(`sweep`) finishes: jobs and canvas runs whose start was never confirmed get their workflow, pending signals are
sent. The same holds for the outbound webhooks a job's or a canvas run's end enqueues: the worker that ended it
starts their workflows (`OutboundStarter`), and the sweep starts what it left. Every step is idempotent (a start
finds the workflow already there, and a workflow takes a delivery once), so two processes doing the same thing
twice is harmless.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.converter import value_to_type
from temporalio.service import RPCError, RPCStatusCode

from core import metrics
from core.config import Settings
from core.db import transaction
from handoff.starts import signal_provider_event, start_canvas_run, start_delivery, start_job, wake_for_running_slot
from models.payloads import (
    CanvasRunInput,
    ImageJobInput,
    OutboundDeliveryInput,
    ProviderEvent,
    RunTransition,
)
from models.tables import Run
from models.tenancy import tenant_of
from models.vocabulary import JobStatus
from store import canvas_nodes, canvas_runs, deliveries, jsonb, outbound, runs, tenants

log = logging.getLogger(__name__)

# Prompt attempts by the API process, `RETRY_DELAY_SECONDS` apart, doubling; then the work is the sweep's.
PROMPT_ATTEMPTS = 3
RETRY_DELAY_SECONDS = 0.5
# Starts and signals the API process makes at once; more wait their turn (they hold no connection meanwhile).
MAX_IN_FLIGHT = 64
# Of which one tenant's may take this many: a tenant's burst of starts waits in its own line, so another tenant's
# start still finds a slot at once (the same fair share its workflows get from Temporal's fairness key).
MAX_IN_FLIGHT_PER_TENANT = 16
# The line of signals: a webhook names its job, not the job's tenant.
SIGNALS = "signals"
# A raised cap wakes at most this many jobs in line at once; the rest find their slots at their rechecks.
MAX_WAKES = 64


class TenantSlots:
    """At most `total` handoffs in flight, and at most `per_tenant` of one tenant's."""

    def __init__(self, total: int, per_tenant: int) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_tenant = per_tenant
        self._lines: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @asynccontextmanager
    async def slot(self, line: str) -> AsyncIterator[None]:
        gate, users = self._lines.setdefault(line, (asyncio.Semaphore(self._per_tenant), [0]))
        users[0] += 1
        try:
            async with gate, self._total:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._lines[line]  # a tenant with nothing under way holds no memory


SWEEP_BATCH = 200
# How long a stopping API process lets its handoffs finish; what is left is the sweep's.
DRAIN_SECONDS = 5.0

# Errors after which a start or signal may well succeed later (Temporal or PostgreSQL unreachable); anything
# else is a fault of the work itself, which no retry mends.
TRANSIENT_ERRORS = (RPCError, TimeoutError, OSError, SQLAlchemyError)

Work = Callable[[], Awaitable[None]]


def event_json(event: ProviderEvent) -> str:
    """A provider event as a pending signal stores it."""
    return jsonb.storable_json(dataclasses.asdict(event), what="webhook event")


def event_from_json(value: Mapping[str, Any]) -> ProviderEvent:
    event: ProviderEvent = value_to_type(ProviderEvent, dict(value))
    return event


class Handoff:
    """The starts and signals the API process owes Temporal for what it has committed and answered."""

    def __init__(
        self, client: Callable[[], Awaitable[Client]], settings: Settings, sessions: async_sessionmaker[AsyncSession]
    ) -> None:
        self._client = client
        self._settings = settings
        self._sessions = sessions
        self._slots = TenantSlots(MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_TENANT)
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent = SentSignals(sessions)

    # `start` and `signal` return at once, their work under way. They are coroutines so that a route can hand them
    # to its BackgroundTasks, which run only once the answer is sent: the work must not delay the answer.
    async def start(self, job: ImageJobInput, *, supersedes: list[str] | None = None) -> None:
        """Start the recorded run's workflow, then cancel the node's older jobs it supersedes."""

        async def work() -> None:
            client = await self._connected()
            if await start_or_fail(client, self._settings, self._sessions, job):
                await cancel_superseded(client, supersedes or [])

        self._spawn(work, f"start of {job.job_id}", tenant_of(job.canvas_id))

    async def start_canvas_run(self, plan: CanvasRunInput) -> None:
        """Start the recorded canvas run's workflow."""

        async def work() -> None:
            await start_canvas_run_or_fail(await self._connected(), self._settings, self._sessions, plan)

        self._spawn(work, f"start of canvas run {plan.run_id}", tenant_of(plan.canvas_id))

    async def signal(self, signal_id: int, job_id: str, event: ProviderEvent) -> None:
        """Send a taken delivery's event to its job's workflow."""

        async def work() -> None:
            await send_signal(await self._connected(), signal_id, job_id, event)
            self._sent.forget(signal_id)

        self._spawn(work, f"signal {signal_id} to {job_id}", SIGNALS)

    async def wake_line(self, tenant_id: str) -> None:
        """Wake as many of the tenant's jobs waiting in line as it has running slots free (its cap was raised);
        any more find theirs at their rechecks."""

        async def work() -> None:
            cap = self._settings.TENANT_MAX_CONCURRENT_JOBS
            async with self._sessions() as session:
                job_ids = await tenants.first_in_line(session, tenant_id=tenant_id, default_cap=cap, most=MAX_WAKES)
            client = await self._connected()
            for job_id in job_ids:
                await wake_for_running_slot(client, job_id)

        self._spawn(work, f"wake of tenant {tenant_id}'s line", tenant_id)

    async def aclose(self, timeout: float = DRAIN_SECONDS) -> None:
        """Let the handoffs under way finish for up to `timeout`, then stop them (the sweep takes over)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._sent.aclose(timeout)

    async def _connected(self) -> Client:
        try:
            return await self._client()
        except Exception as error:  # the client's connect raises bare RuntimeErrors
            raise ConnectionError(f"Temporal is not reachable: {error}") from error

    def _spawn(self, work: Work, what: str, line: str) -> None:
        task = asyncio.create_task(self._attempts(work, what, line))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _attempts(self, work: Work, what: str, line: str) -> None:
        async with self._slots.slot(line):
            delay = RETRY_DELAY_SECONDS
            for attempt in range(1, PROMPT_ATTEMPTS + 1):
                try:
                    await work()
                    return
                except TRANSIENT_ERRORS as error:
                    if attempt == PROMPT_ATTEMPTS:
                        log.warning("%s left to the sweep after %d attempts: %s", what, attempt, error)
                        return
                except Exception:
                    log.exception("%s failed", what)
                    return
                await asyncio.sleep(delay)
                delay *= 2


async def start_confirmed(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], job: ImageJobInput
) -> None:
    """Start the job's workflow (or find it) and record that it exists."""
    await start_job(client, settings, job)
    async with transaction(sessions) as session:
        await runs.mark_workflows_started(session, job_ids=[job.job_id])


async def start_or_fail(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], job: ImageJobInput
) -> bool:
    """`start_confirmed`; a start refused for good fails the job instead (False). Transient errors propagate."""
    try:
        await start_confirmed(client, settings, sessions, job)
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:
        await fail_unstartable(sessions, job, error)
        return False
    return True


async def canvas_run_start_confirmed(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], plan: CanvasRunInput
) -> None:
    """Start the canvas run's workflow (or find it) and record that it exists."""
    await start_canvas_run(client, settings, plan)
    async with transaction(sessions) as session:
        await canvas_runs.mark_started(session, run_id=plan.run_id)


async def start_canvas_run_or_fail(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], plan: CanvasRunInput
) -> None:
    """`canvas_run_start_confirmed`; a start refused for good ends the run failed. Transient errors propagate."""
    try:
        await canvas_run_start_confirmed(client, settings, sessions, plan)
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:
        log.error("canvas run %s cannot be started: %r", plan.run_id, error)
        async with transaction(sessions) as session:
            await canvas_runs.fail_unstartable(session, plan=plan, reason="The run could not be started.")


async def start_deliveries(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], delivery_ids: list[str]
) -> None:
    """Start each outbound delivery's workflow (id = the delivery's id, so a repeat finds it) and record it."""
    for delivery_id in delivery_ids:
        await start_delivery(client, settings, OutboundDeliveryInput(delivery_id, settings.outbound_retry_schedule))
        async with transaction(sessions) as session:
            await outbound.mark_started(session, delivery_id=delivery_id)


class OutboundStarter:
    """Starts the outbound deliveries a job's or canvas run's end has just enqueued (from the worker that ended
    it); what it cannot start now, the sweep starts later."""

    def __init__(self, client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._client, self._settings, self._sessions = client, settings, sessions

    async def start_for(self, subject_id: str) -> None:
        """Start the deliveries about `subject_id` still to start (a retried step finds its first attempt's)."""
        async with self._sessions() as session:
            delivery_ids = await outbound.unstarted_for(session, subject_id=subject_id)
        await self.start(delivery_ids)

    async def start(self, delivery_ids: list[str]) -> None:
        """Start these enqueued deliveries; none is nothing to do (no endpoint takes the event)."""
        if not delivery_ids:
            return
        try:
            await start_deliveries(self._client, self._settings, self._sessions, delivery_ids)
        except TRANSIENT_ERRORS as error:
            log.warning("outbound deliveries %s left to the sweep: %s", ", ".join(delivery_ids), error)


async def cancel_superseded(client: Client, job_ids: list[str]) -> None:
    """Cancel the node's older unfinished jobs: ownership already keeps them from overwriting the node; cancelling
    saves their provider calls. One already ended is fine."""
    for job_id in job_ids:
        try:
            await client.get_workflow_handle(job_id).cancel()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise


async def fail_unstartable(sessions: async_sessionmaker[AsyncSession], job: ImageJobInput, error: Exception) -> None:
    """A start Temporal refuses for good ends the job failed, on its run and its node, so nobody waits on it."""
    log.error("job %s cannot be started: %r", job.job_id, error)
    message = f"The job could not be started: {error}"
    async with transaction(sessions) as session:
        change = RunTransition(job_id=job.job_id, status=JobStatus.FAILED, error=message, error_code="StartRefused")
        ended = await canvas_nodes.end_run(session, change=change, canvas_id=job.canvas_id, node_id=job.node_id)
        await runs.mark_workflows_started(session, job_ids=[job.job_id])  # nothing is left to start
    if ended:
        metrics.job_ended(ended, change)


async def send_signal(client: Client, signal_id: int, job_id: str, event: ProviderEvent) -> None:
    """Signal the event. Returning means it can be forgotten: a workflow that has ended no longer needs it, and
    one that cannot take it (not a transient error, which propagates) finishes by polling its provider instead."""
    try:
        await signal_provider_event(client, job_id, event)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
    except TRANSIENT_ERRORS:
        raise
    except Exception:
        log.exception("signal %d to %s cannot be sent; the job will poll its provider instead", signal_id, job_id)


class SentSignals:
    """Forgets the pending signals this process has sent, many in one statement.

    In a storm of webhooks a DELETE per signal would take a pooled connection and a round trip per signal from
    the requests being answered. The ids sent while one DELETE runs go into the next, so a batch is as large as
    the load makes it and no id waits on a timer. A batch that is lost (the process stops, the database is away)
    only leaves rows the sweep sends again, and a workflow takes a delivery once."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._ids: list[int] = []
        self._flushing: asyncio.Task[None] | None = None

    def forget(self, signal_id: int) -> None:
        self._ids.append(signal_id)
        if self._flushing is None:
            self._flushing = asyncio.create_task(self._flush())

    async def aclose(self, timeout: float) -> None:
        """Let the last batch be forgotten for up to `timeout`; what is left is the sweep's."""
        if self._flushing is not None:
            await asyncio.wait([self._flushing], timeout=timeout)

    async def _flush(self) -> None:
        try:
            while self._ids:
                ids, self._ids = self._ids, []
                try:
                    async with transaction(self._sessions) as session:
                        await deliveries.forget_signals(session, signal_ids=ids)
                except TRANSIENT_ERRORS as error:
                    log.warning("%d sent signals left to the sweep, which sends them again: %s", len(ids), error)
                except Exception:  # a fault of ours: these are still the sweep's, and the next batch goes on
                    log.exception("%d sent signals left to the sweep, which sends them again", len(ids))
        finally:
            self._flushing = None


async def sweep(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    job_of: Callable[[Run], ImageJobInput | None],
) -> int:
    """Finish what processes committed and did not hand off: start unstarted jobs and canvas runs, send pending
    signals, start outbound webhooks.

    It leaves what is younger than HANDOFF_GRACE_SECONDS to the process that committed it. `job_of` rebuilds a
    run's workflow input (None: a provider this process does not have). Returns how many things it handed off."""
    older = settings.HANDOFF_GRACE_SECONDS
    handed = {
        "job starts": await _sweep_jobs(client, settings, sessions, job_of, older),
        "canvas run starts": await _sweep_canvas_runs(client, settings, sessions, older),
        "signals": await _sweep_signals(client, sessions, older),
        "outbound webhooks": await _sweep_outbound(client, settings, sessions, older),
    }
    if any(handed.values()):
        log.info("handed off what processes left: %s", ", ".join(f"{count} {what}" for what, count in handed.items()))
    return sum(handed.values())


# Job starts count as the sweep sees them: an unconfirmed run that has moved on from `pending` has a workflow.
_BACKLOG = text(
    "SELECT (SELECT count(*) FROM runs WHERE workflow_started_at IS NULL AND status = 'pending'),"
    " (SELECT count(*) FROM canvas_runs WHERE workflow_started_at IS NULL),"
    " (SELECT count(*) FROM pending_signals),"
    " (SELECT count(*) FROM outbound_deliveries WHERE workflow_started_at IS NULL)"
)
BACKLOG_KINDS = ("job_starts", "canvas_run_starts", "signals", "deliveries")


async def backlog(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """What is committed but not yet handed to Temporal, by kind (each count is served by a partial index)."""
    async with sessions() as session:
        counts = (await session.execute(_BACKLOG)).one()
    return dict(zip(BACKLOG_KINDS, (int(count) for count in counts), strict=True))


async def _sweep_jobs(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    job_of: Callable[[Run], ImageJobInput | None],
    older_than_seconds: float,
) -> int:
    async with sessions() as session:
        unstarted = await runs.unstarted_runs(session, older_than_seconds=older_than_seconds, limit=SWEEP_BATCH)
    for run in unstarted:
        job = job_of(run)
        if job is not None:
            await start_or_fail(client, settings, sessions, job)
    return len(unstarted)


async def _sweep_canvas_runs(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], older_than_seconds: float
) -> int:
    async with sessions() as session:
        plans = await canvas_runs.unstarted_canvas_runs(
            session,
            older_than_seconds=older_than_seconds,
            limit=SWEEP_BATCH,
            max_parallel=settings.CANVAS_RUN_MAX_PARALLEL,
        )
    for plan in plans:
        await start_canvas_run_or_fail(client, settings, sessions, plan)
    return len(plans)


async def _sweep_signals(client: Client, sessions: async_sessionmaker[AsyncSession], older_than_seconds: float) -> int:
    async with sessions() as session:
        unsent = await deliveries.unsent_signals(session, older_than_seconds=older_than_seconds, limit=SWEEP_BATCH)
    done: list[int] = []
    try:
        for signal_id, job_id, stored in unsent:
            try:
                event = event_from_json(stored)
            except Exception:  # a row no version of this code could have written; keeping it would block the sweep
                log.exception("pending signal %d to %s is unreadable; dropped", signal_id, job_id)
            else:
                await send_signal(client, signal_id, job_id, event)
            done.append(signal_id)
    finally:
        if done:
            async with transaction(sessions) as session:
                await deliveries.forget_signals(session, signal_ids=done)
    return len(unsent)


async def _sweep_outbound(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], older_than_seconds: float
) -> int:
    async with sessions() as session:
        unstarted = await outbound.unstarted(session, older_than_seconds=older_than_seconds, limit=SWEEP_BATCH)
    await start_deliveries(client, settings, sessions, unstarted)
    return len(unstarted)
