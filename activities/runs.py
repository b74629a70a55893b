"""Activities that write runs, events and canvas nodes. Each is idempotent: Temporal may run it twice."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from core import metrics
from core.db import transaction
from core.tracing import current_traceparent
from handoff.ends import wake_next_in_line
from handoff.sweep import OutboundStarter
from models.errors import TENANT_AT_CAPACITY
from models.payloads import (
    CanvasRunFinished,
    ImageJobInput,
    NodeRunUpdate,
    NodeUpdate,
    ProgressUpdate,
    ProviderJobAttached,
    RunTransition,
)
from models.tenancy import tenant_of
from models.vocabulary import JobStatus
from store import canvas_nodes, canvas_runs, runs, tenants


async def save_progress(sessions: async_sessionmaker[AsyncSession], update: ProgressUpdate) -> None:
    """Record progress on the run (one event) and show it on the node: one statement, so `sessions` may autocommit."""
    async with transaction(sessions) as session:
        await canvas_nodes.record_progress(session, update=update)


def running_node(job: ImageJobInput) -> NodeUpdate:
    """The job's node, showing it run."""
    return NodeUpdate(canvas_id=job.canvas_id, node_id=job.node_id, job_id=job.job_id, status=JobStatus.RUNNING)


class RunActivities:
    """Run bookkeeping; gets its session factories from the worker, what starts the outbound webhooks a job's end
    enqueues (None: the sweep starts them), and the client that wakes the job next in line for a running slot
    when one ends (None: waiting jobs find the slot at their next recheck). The steps that are one statement,
    atomic by itself, run it on `autocommit_sessions` (default: `sessions`), without the BEGIN and COMMIT round
    trips around it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        outbound: OutboundStarter | None = None,
        *,
        autocommit_sessions: async_sessionmaker[AsyncSession] | None = None,
        default_max_concurrent: int | None = None,
        client: Client | None = None,
    ) -> None:
        self.sessions = sessions
        self.autocommit_sessions = autocommit_sessions or sessions
        self.outbound = outbound
        self.default_max_concurrent = default_max_concurrent
        self.client = client

    @activity.defn
    async def create_run(self, job: ImageJobInput) -> None:
        """Insert the run, its `created` event and the node claim (the API usually did this already; a canvas run's
        jobs are recorded here, in the trace of their canvas run)."""
        job = replace(job, trace_parent=job.trace_parent or current_traceparent())
        async with transaction(self.autocommit_sessions) as session:
            recorded = await runs.record_run(session, job=job, workflow_started=True)
        if recorded.created:
            metrics.job_started(job.provider, job.model)

    @activity.defn
    async def mark_running(self, job: ImageJobInput) -> bool:
        """Move the job to `running`, and its node with it; False (the job stays `pending`, in its tenant's line)
        while its tenant has maxConcurrentJobs running already."""
        if self.default_max_concurrent is None:
            # Most tenants have no cap: one statement moves the job, unless its tenant has a cap of its own (or
            # the job moved already, on an earlier attempt); then the locked path below decides.
            async with transaction(self.autocommit_sessions) as session:
                if await canvas_nodes.start_running(
                    session, update=running_node(job), unless_capped=tenant_of(job.canvas_id)
                ):
                    return True
        return await self._take_running_slot(job)

    @activity.defn
    async def wait_for_running_slot(self, job: ImageJobInput) -> None:
        """How jobs started before wake-ups wait at their tenant's cap: `mark_running`, failing (and retried, with
        backoff) until one of the tenant's running jobs ends. Newer jobs wait in the workflow for a wake-up."""
        if not await self._take_running_slot(job):
            message = "The tenant runs its maxConcurrentJobs already; the job waits, pending, for one to end."
            raise ApplicationError(message, type=TENANT_AT_CAPACITY)

    async def _take_running_slot(self, job: ImageJobInput) -> bool:
        async with transaction(self.sessions) as session:
            tenant_id = tenant_of(job.canvas_id)
            cap = self.default_max_concurrent
            if not await tenants.running_slot_free(session, tenant_id=tenant_id, job_id=job.job_id, default_cap=cap):
                await tenants.join_slot_line(session, job_id=job.job_id)
                return False
            await canvas_nodes.start_running(session, update=running_node(job))
        return True

    @activity.defn
    async def attach_provider_job(self, attached: ProviderJobAttached) -> None:
        async with transaction(self.autocommit_sessions) as session:  # one statement
            await runs.set_provider_job(
                session, job_id=attached.job_id, provider_job_id=attached.provider_job_id, effective=attached.effective
            )

    @activity.defn
    async def record_progress(self, update: ProgressUpdate) -> None:
        await save_progress(self.autocommit_sessions, update)

    @activity.defn
    async def update_node(self, update: NodeUpdate) -> bool:
        """Merge the job's result into its node; False when a newer job owns the node (or nothing changed)."""
        async with transaction(self.autocommit_sessions) as session:
            return await canvas_nodes.update_node(session, update=update)

    @activity.defn
    async def complete_run(self, change: RunTransition) -> bool:
        return await self._transition(change)

    @activity.defn
    async def fail_run(self, change: RunTransition) -> bool:
        return await self._transition(change)

    @activity.defn
    async def cancel_run(self, change: RunTransition) -> bool:
        return await self._transition(change)

    async def _transition(self, change: RunTransition) -> bool:
        """A terminal transition; once committed, the outbound webhooks it enqueued are started and the next job in
        the tenant's line for a running slot is woken (a retry after a committed transition changes nothing, and
        leaves the webhooks to the sweep and the waiting job to its recheck)."""
        async with transaction(self.autocommit_sessions) as session:  # one statement
            changed = await runs.transition(session, change=change)
        if changed is None:
            return False
        metrics.job_ended(changed, change)
        if self.outbound is not None:
            await self.outbound.start(list(changed.outbound_delivery_ids))
        await wake_next_in_line(self.client, self.autocommit_sessions, changed.next_in_line)
        return True


class CanvasRunActivities:
    """A canvas run's bookkeeping: its nodes' states (on their rows and on the board) and its end."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbound: OutboundStarter | None = None) -> None:
        self.sessions = sessions
        self.outbound = outbound

    @activity.defn
    async def record_node_state(self, update: NodeRunUpdate) -> None:
        async with transaction(self.sessions) as session:
            await canvas_runs.set_node_state(session, update=update)

    @activity.defn
    async def finish_canvas_run(self, finished: CanvasRunFinished) -> None:
        async with transaction(self.sessions) as session:
            await canvas_runs.finish_canvas_run(session, run_id=finished.run_id, status=finished.status)
        if self.outbound is not None:
            await self.outbound.start_for(finished.run_id)
