"""The floors: bare Temporal workflows that orchestrate like an image job but do no work inside.

They run on their own task queue in their own worker process (`python -m bench.roles floor-worker`), so each
product figure can be set beside what Temporal alone costs for the same shape of work.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from core.temporal import NODE_ID

WAITING_MARK = "waiting"
"""The `NodeId` search attribute a WaitingWorkflow sets once it waits, so the harness can count waiters."""

STEP_TIMEOUT = timedelta(seconds=60)
FLOOR_STATEMENT = "floor_statement"
"""The local activity that commits one real PostgreSQL statement (bench/floor_statements.py, floor worker only)."""


@dataclass
class Step:
    """One activity: on `task_queue`, or a local activity when None; it sleeps `seconds` (the provider's time).
    A `statement` step is a local activity that commits one PostgreSQL statement, as the product's steps do."""

    task_queue: str | None
    seconds: float = 0.0
    statement: bool = False


@dataclass
class StepsInput:
    steps: list[Step]


@dataclass
class WaitingInput:
    """Steps before the wait (like create/mark/submit/attach) and after the terminal signal (store/node/complete)."""

    before: list[Step]
    after: list[Step]


@dataclass
class FloorEvent:
    """What a provider webhook carries, as a bare signal."""

    status: str
    progress: float | None = None
    delivery_id: str | None = None
    output_urls: list[str] = field(default_factory=list)


@activity.defn
async def floor_step(seconds: float) -> None:
    """Does nothing, or sleeps like a provider that takes `seconds`."""
    if seconds:
        await asyncio.sleep(seconds)


async def run_step(step: Step) -> None:
    if step.statement:
        await workflow.execute_local_activity(
            FLOOR_STATEMENT, workflow.info().workflow_id, start_to_close_timeout=STEP_TIMEOUT
        )
    elif step.task_queue is None:
        await workflow.execute_local_activity(floor_step, step.seconds, start_to_close_timeout=STEP_TIMEOUT)
    else:
        await workflow.execute_activity(
            floor_step, step.seconds, task_queue=step.task_queue, start_to_close_timeout=STEP_TIMEOUT
        )


@workflow.defn
class EmptyWorkflow:
    """Starts and ends: the floor of starting a workflow."""

    @workflow.run
    async def run(self) -> None:
        return None


@workflow.defn
class StepsWorkflow:
    """Runs its steps one after the other: the floor of a synchronous image job."""

    @workflow.run
    async def run(self, job: StepsInput) -> None:
        for step in job.steps:
            await run_step(step)


@workflow.defn
class WaitingWorkflow:
    """Waits for a terminal `event` signal between its steps: the floor of a job waiting on a webhook."""

    def __init__(self) -> None:
        self._terminal = False
        self._seen: set[str] = set()

    @workflow.signal
    def event(self, event: FloorEvent) -> None:
        if event.delivery_id in self._seen:
            return
        if event.delivery_id:
            self._seen.add(event.delivery_id)
        if event.status in ("succeeded", "failed", "cancelled"):
            self._terminal = True

    @workflow.run
    async def run(self, job: WaitingInput) -> None:
        for step in job.before:
            await run_step(step)
        workflow.upsert_search_attributes([NODE_ID.value_set(WAITING_MARK)])
        await workflow.wait_condition(lambda: self._terminal)
        for step in job.after:
            await run_step(step)


FLOOR_WORKFLOWS = [EmptyWorkflow, StepsWorkflow, WaitingWorkflow]
FLOOR_ACTIVITIES = [floor_step]
