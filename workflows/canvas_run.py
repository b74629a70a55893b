"""CanvasRunWorkflow: a board's image nodes as one durable graph (the workflow id is the run id).

Each node runs as an ImageJobWorkflow child (its own record, events, node updates and Temporal page) once the node
it refines has an image, which becomes the child's previousImage. Independent branches run side by side, at most
`max_parallel` children at once (CANVAS_RUN_MAX_PARALLEL). A node whose inputs match the job it shows is `cached`
(nothing generated); a node that fails or is cancelled marks everything below it `skipped`, and the other branches
go on. Every outcome is written (a local activity) to the node's run row and to the node on the board; a node is
`running` while its job runs, which its job's own record says.

History stays small: per node, a child's start and end (about five events) and two or three markers, so a
200-node run is some 2,000 events, far inside Temporal's 51,200 (planning.canvas_plan.MAX_RUN_NODES caps a run at
500 nodes).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from temporalio import workflow
from temporalio.exceptions import CancelledError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from activities.runs import CanvasRunActivities
    from handoff.starts import job_search_attributes, task_priority
    from models.payloads import CanvasRunFinished, CanvasRunInput, NodeRunUpdate, RunNodePlan
    from models.vocabulary import FINISHED_NODE_STATES, IMAGE_STATES, JobStatus, NodeRunState
    from planning.canvas_plan import prompt_name
    from workflows.image_job import ImageJobWorkflow, failure_of
    from workflows.policies import CLEANUP_STEP, DB_LOCAL_STEP


@workflow.defn
class CanvasRunWorkflow:
    """A run of a board's image nodes; `states` answers where each node is."""

    def __init__(self) -> None:
        self._states: dict[str, NodeRunState] = {}
        self._images: dict[str, str] = {}
        self._cancelling = False

    @workflow.query
    def states(self) -> dict[str, str]:
        return {node: str(state) for node, state in self._states.items()}

    @workflow.run
    async def run(self, plan: CanvasRunInput) -> CanvasRunFinished:
        self._states = {node.node_id: NodeRunState.PENDING for node in plan.nodes}
        running: dict[str, asyncio.Task[None]] = {}
        try:
            while True:
                for node in self._ready(plan)[: max(plan.max_parallel - len(running), 0)]:
                    self._states[node.node_id] = NodeRunState.RUNNING
                    running[node.node_id] = asyncio.create_task(self._run_node(plan, node))
                if not running:  # nothing runs and nothing can start: every node has its outcome
                    break
                await workflow.wait(list(running.values()), return_when=asyncio.FIRST_COMPLETED)
                for node_id in [node_id for node_id, task in running.items() if task.done()]:
                    running.pop(node_id).result()
        except (asyncio.CancelledError, CancelledError):
            await self._cancel_remaining(plan, running)
            raise
        failed = any(state in (NodeRunState.FAILED, NodeRunState.SKIPPED) for state in self._states.values())
        return await self._finish(plan, JobStatus.FAILED if failed else JobStatus.COMPLETED)

    def _ready(self, plan: CanvasRunInput) -> list[RunNodePlan]:
        """Pending nodes whose input image is there."""
        return [
            node
            for node in plan.nodes
            if self._states[node.node_id] == NodeRunState.PENDING
            and (node.upstream is None or self._states.get(node.upstream) in IMAGE_STATES)
        ]

    async def _run_node(self, plan: CanvasRunInput, node: RunNodePlan) -> None:
        if node.cached is not None and not plan.force:
            self._images[node.node_id] = node.cached.image_url
            await self._record(plan, node, NodeRunState.CACHED, job_id=node.cached.job_id, image=node.cached.image_url)
            return
        spec = node.job.spec
        if node.upstream is not None:
            spec = replace(spec, previous_image=self._images[node.upstream])
        job = replace(node.job, spec=spec, priority=plan.priority)
        # Not recorded: the node reads `running` from its job's own record (its id is the node's from the start).
        try:
            result = await workflow.execute_child_workflow(
                ImageJobWorkflow.run,
                job,
                id=job.job_id,
                task_queue=workflow.info().task_queue,
                priority=task_priority(plan.priority, plan.canvas_id),
                search_attributes=job_search_attributes(job),
                static_summary=f"canvas run {plan.run_id} · node {node.node_id}",
            )
        except ChildWorkflowError as error:
            cancelled = isinstance(error.cause, CancelledError)
            state = NodeRunState.CANCELLED if cancelled else NodeRunState.FAILED
            await self._record(plan, node, state, job_id=job.job_id, reason=None if cancelled else failure_of(error)[1])
            await self._skip_below(plan, node.node_id)
            return
        image = result.images[0].url if result.images else None
        if image is None:
            await self._record(plan, node, NodeRunState.FAILED, job_id=job.job_id, reason="the job stored no image")
            await self._skip_below(plan, node.node_id)
            return
        self._images[node.node_id] = image
        await self._record(plan, node, NodeRunState.COMPLETED, job_id=job.job_id, image=image)

    async def _skip_below(self, plan: CanvasRunInput, failed: str) -> None:
        """Every node below `failed` that has not run is skipped, saying which node stopped it (when the whole run
        is being cancelled, they are marked cancelled instead)."""
        if self._cancelling:
            return
        below = {failed}
        for node in plan.nodes:  # upstream before downstream, so one pass reaches every descendant
            if node.upstream in below and self._states[node.node_id] == NodeRunState.PENDING:
                below.add(node.node_id)
                self._states[node.node_id] = NodeRunState.SKIPPED
                stopped = next(planned for planned in plan.nodes if planned.node_id == failed)
                reason = f"{prompt_name(stopped.job.spec.prompt, failed)} did not produce an image"
                await self._record(plan, node, NodeRunState.SKIPPED, reason=reason)

    async def _cancel_remaining(self, plan: CanvasRunInput, running: dict[str, asyncio.Task[None]]) -> None:
        """Cancelling the run: running children are cancelled (and record themselves), pending nodes are marked."""
        self._cancelling = True
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        for node in plan.nodes:
            if self._states[node.node_id] not in FINISHED_NODE_STATES:
                await self._record(plan, node, NodeRunState.CANCELLED, cleanup=True)
        await self._finish(plan, JobStatus.CANCELLED, cleanup=True)

    async def _record(
        self,
        plan: CanvasRunInput,
        node: RunNodePlan,
        state: NodeRunState,
        *,
        job_id: str | None = None,
        image: str | None = None,
        reason: str | None = None,
        cleanup: bool = False,
    ) -> None:
        self._states[node.node_id] = state
        update = NodeRunUpdate(plan.run_id, plan.canvas_id, node.node_id, state, job_id, image, reason)
        await workflow.execute_local_activity_method(
            CanvasRunActivities.record_node_state, update, **(CLEANUP_STEP if cleanup else DB_LOCAL_STEP)
        )

    async def _finish(self, plan: CanvasRunInput, status: JobStatus, *, cleanup: bool = False) -> CanvasRunFinished:
        finished = CanvasRunFinished(plan.run_id, status)
        await workflow.execute_local_activity_method(
            CanvasRunActivities.finish_canvas_run, finished, **(CLEANUP_STEP if cleanup else DB_LOCAL_STEP)
        )
        return finished
