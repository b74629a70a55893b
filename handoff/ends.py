"""Jobs and canvas runs ended from outside their workflows, and the line for running slots that every end moves along.

A job's workflow records the job's end itself (activities/runs.py). A workflow that stops without running its own code
leaves its job `pending` or `running` for good: its node shows it working forever, and a running job holds one of its
tenant's running slots (maxConcurrentJobs), so a few of them would stop a capped tenant for good. That happens when an
operator terminates the workflow (the Temporal UI, `temporal workflow terminate`), when it times out, and when it is
deleted. So the workers' sweep asks Temporal about every unfinished job once each WORKFLOW_CHECK_SECONDS
(`end_vanished`) and ends the jobs whose workflows are gone, failed with `WorkflowGone`, as their workflows would have:
the provider's job, if one was submitted, cancelled (workflows/provider_cancel.py, started before the end is
committed), then the run, its event, its node, its outbound webhooks and the next job in its tenant's line. A canvas
run whose workflow is gone would hold its board for good (a board runs one run at a time); it is ended failed the same
way, with each node that had no outcome. A cancel that finds the workflow gone ends the job or the canvas run at once
(api/routes/).
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core import metrics
from core.config import Settings
from core.db import transaction
from handoff.starts import start_provider_cancel, wake_for_running_slot
from handoff.sweep import SWEEP_BATCH, OutboundStarter
from models.errors import WORKFLOW_GONE
from models.payloads import CancelAtProvider, RunTransition
from models.vocabulary import JobStatus
from store import canvas_nodes, canvas_runs, runs, tenants
from store.runs import UnfinishedRun

log = logging.getLogger(__name__)

# How many jobs whose workflows are gone an end takes out of its tenant's line, looking for one to wake; later ends
# take any more.
MAX_GONE_FROM_LINE = 8

# Why a workflow that has closed will not end its job, by how it closed. A workflow that ends its job does so
# before it closes, so a closed workflow with an unfinished job, whatever its status, left the job behind.
GONE_BECAUSE = {
    WorkflowExecutionStatus.TERMINATED: "was terminated in Temporal",
    WorkflowExecutionStatus.TIMED_OUT: "timed out in Temporal",
    WorkflowExecutionStatus.FAILED: "failed in Temporal",
    WorkflowExecutionStatus.CANCELED: "was cancelled in Temporal",
    WorkflowExecutionStatus.COMPLETED: "completed in Temporal",
}
NOT_FOUND = "no longer exists in Temporal"


async def why_workflow_gone(client: Client, workflow_id: str) -> str | None:
    """Why a job's or canvas run's workflow will not end it (the workflow closed, or no longer exists); None while it
    runs."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return NOT_FOUND
        raise
    return GONE_BECAUSE.get(described.status) if described.status is not None else None


def left_behind(job_id: str, reason: str) -> RunTransition:
    """The end of a job whose workflow `reason` (`why_workflow_gone`)."""
    message = f"The job's workflow {reason} before the job ended, so nothing would end it. Retry it to run it again."
    return RunTransition(job_id=job_id, status=JobStatus.FAILED, error=message, error_code=WORKFLOW_GONE)


async def end_job(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    job: UnfinishedRun,
    change: RunTransition,
) -> bool:
    """End the job as its workflow would have: its provider job cancelled first, then its run, event, node and
    outbound deliveries in one transaction (`sessions` must not autocommit), then those deliveries started and the
    next job in its tenant's line woken. False when it had ended already.

    The cancel is started before the end is committed, because nothing asks for it after: a process that dies
    between the two leaves the job unfinished, and the next end of it (the sweep's, or a repeated cancel) finds
    the cancel started already. A cancel that cannot be started raises, and the job is left as it was."""
    await cancel_provider_job(client, settings, sessions, job)
    async with transaction(sessions) as session:
        ended = await canvas_nodes.end_run(session, change=change, canvas_id=job.canvas_id, node_id=job.node_id)
    if ended is None:
        return False
    metrics.job_ended(ended, change)
    await OutboundStarter(client, settings, sessions).start(list(ended.outbound_delivery_ids))
    await wake_next_in_line(client, sessions, ended.next_in_line)
    return True


async def cancel_provider_job(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], job: UnfinishedRun
) -> None:
    """The job's provider job, if it was submitted, runs on (and is billed) after its workflow is gone: start its
    cancel (workflows/provider_cancel.py). Read now rather than when the job was found: the workflow may have
    submitted it just before it went."""
    async with transaction(sessions) as session:  # one statement
        submitted = await runs.submitted_provider_job(session, job_id=job.job_id)
    if submitted is not None:
        provider, provider_job_id = submitted
        await start_provider_cancel(
            client, settings, CancelAtProvider(provider, provider_job_id, job.job_id), job.canvas_id
        )


async def end_canvas_run(
    client: Client,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    run_id: str,
    canvas_id: str,
    status: JobStatus,
    reason: str | None = None,
) -> bool:
    """End a canvas run as its workflow would have: each node without an outcome yet gets `status` (failed or
    cancelled) and `reason`, and the run ends with it, in one transaction (`sessions` must not autocommit); then
    its outbound deliveries are started. False when it had ended already."""
    async with transaction(sessions) as session:
        ended = await canvas_runs.end_canvas_run(
            session, run_id=run_id, canvas_id=canvas_id, status=status, reason=reason
        )
    if ended:
        await OutboundStarter(client, settings, sessions).start_for(run_id)
    return ended


async def end_vanished(client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> int:
    """Ask Temporal about the unfinished jobs and canvas runs due for it, and end those whose workflows are gone;
    returns how many it ended. One asked about is not asked again for WORKFLOW_CHECK_SECONDS, whatever the
    answer; a batch whose questions fail is due again at once."""
    every = settings.WORKFLOW_CHECK_SECONDS
    async with transaction(sessions) as session:
        jobs = await runs.due_for_workflow_check(session, every_seconds=every, limit=SWEEP_BATCH)
        boards = await canvas_runs.due_for_workflow_check(session, every_seconds=every, limit=SWEEP_BATCH)
    try:
        return await _end_jobs_left_behind(client, settings, sessions, jobs) + await _end_canvas_runs_left_behind(
            client, settings, sessions, boards
        )
    except Exception:
        # Temporal (or the database) went away mid-batch: what was taken is due again at the next sweep, not a whole
        # period later. Those already ended stay ended; those found alive are asked once more.
        async with transaction(sessions) as session:
            await runs.forget_workflow_checks(session, job_ids=[job.job_id for job in jobs])
            await canvas_runs.forget_workflow_checks(session, run_ids=[run_id for run_id, _ in boards])
        raise


async def _end_jobs_left_behind(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], jobs: list[UnfinishedRun]
) -> int:
    ended = 0
    for job in jobs:
        reason = await why_workflow_gone(client, job.job_id)
        if reason is not None and await end_job(client, settings, sessions, job, left_behind(job.job_id, reason)):
            log.warning("job %s ended failed: its workflow %s before the job ended", job.job_id, reason)
            ended += 1
    return ended


async def _end_canvas_runs_left_behind(
    client: Client, settings: Settings, sessions: async_sessionmaker[AsyncSession], boards: list[tuple[str, str]]
) -> int:
    ended = 0
    for run_id, canvas_id in boards:
        reason = await why_workflow_gone(client, run_id)
        words = f"the run's workflow {reason}"
        if reason is not None and await end_canvas_run(
            client, settings, sessions, run_id, canvas_id, JobStatus.FAILED, words
        ):
            log.warning("canvas run %s ended failed: its workflow %s before the run ended", run_id, reason)
            ended += 1
    return ended


async def wake_next_in_line(
    client: Client | None, sessions: async_sessionmaker[AsyncSession], job_id: str | None
) -> None:
    """Wake `job_id`, the first job in a tenant's line for a running slot an end has freed. One whose workflow is
    gone leaves the line (it would take every wake-up), and the next is woken instead. Without a client, waiting
    jobs find the slot at their next recheck."""
    for _ in range(MAX_GONE_FROM_LINE):
        if client is None or job_id is None or await wake_for_running_slot(client, job_id):
            return
        async with transaction(sessions) as session:  # one statement
            job_id = await tenants.leave_slot_line(session, job_id=job_id)
