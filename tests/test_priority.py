"""Priority: a person's Generate (high) outranks batch work (low) waiting in the same backlogged queue."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import EventType, TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.runs import RunActivities
from core.config import Settings
from core.db import create_engine, session_factory
from tests.fixtures.providers import ONE_PARTITION, dedicated_temporal, temporal_address_of
from tests.fixtures.stack import make_settings, running_stack
from tests.helpers import eventually
from workflows.image_job import ImageJobWorkflow

QUEUED_LOW = 100
# The database steps an image job's first workflow tasks run (as local activities).
RUN_STEPS = ("create_run", "mark_running", "update_node", "complete_run", "fail_run", "cancel_run", "record_progress")


async def first_task_started(client: Client, job_id: str) -> float:
    """When the job's first workflow task was handed to a worker (seconds since the epoch)."""
    async for event in client.get_workflow_handle(job_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            return event.event_time.ToDatetime().timestamp()
    raise AssertionError(f"{job_id} never started")


async def test_a_high_priority_job_started_behind_a_hundred_low_ones_starts_first(stack_settings: Settings) -> None:
    # Priority orders the tasks of one task queue partition; with several, a poll can land on a partition that
    # holds only low ones. One partition makes the order the queue's.
    async with dedicated_temporal(dynamic_config=ONE_PARTITION) as temporal:
        settings = make_settings(stack_settings, TEMPORAL_ADDRESS=temporal_address_of(temporal))
        async with running_stack(settings, temporal.client, workers=False) as stack:
            low = [await stack.start(f"batch {index}", priority="low") for index in range(QUEUED_LOW)]
            high = await stack.start("the one a person waits for", priority="high")
            # A start's first task reaches the queue a moment after the start returns (the server hands it over
            # asynchronously); the worker begins once all of them wait there.
            await wait_for_backlog(temporal.client, settings.TASK_QUEUE, QUEUED_LOW + 1)
            engine = create_engine(settings)
            # One poller taking one task at a time, so the order the queue hands tasks out is the order they start.
            worker = Worker(
                temporal.client,
                task_queue=settings.TASK_QUEUE,
                workflows=[ImageJobWorkflow],
                activities=[getattr(RunActivities(session_factory(engine)), name) for name in RUN_STEPS],
                max_concurrent_workflow_tasks=1,
                max_concurrent_workflow_task_polls=1,
                max_cached_workflows=0,  # one poller is only allowed without a sticky queue
            )
            async with worker:
                high_started = await wait_started(temporal.client, high["jobId"])
                await asyncio.sleep(1.0)  # let some low ones start too, so the comparison means something
            await engine.dispose()
            low_started = [await maybe_started(temporal.client, job["jobId"]) for job in low]

    started_low = [when for when in low_started if when is not None]
    assert started_low, "no low-priority job started after the high one: the comparison would mean nothing"
    before = sorted(when - high_started for when in started_low if when < high_started)
    assert not before, f"{len(before)} of {len(started_low)} low jobs started before the high one, by {before} s"


async def wait_for_backlog(client: Client, task_queue: str, count: int, timeout: float = 30) -> None:
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        report_stats=True,
    )

    async def backlogged() -> bool:
        return (await client.workflow_service.describe_task_queue(request)).stats.approximate_backlog_count >= count

    await eventually(backlogged, what=f"{count} workflow tasks in {task_queue}'s backlog", timeout=timeout)


async def wait_started(client: Client, job_id: str, timeout: float = 30) -> float:
    return await eventually(lambda: maybe_started(client, job_id), what=f"{job_id}'s first task", timeout=timeout)


async def maybe_started(client: Client, job_id: str) -> float | None:
    try:
        return await first_task_started(client, job_id)
    except AssertionError:
        return None
