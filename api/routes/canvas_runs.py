"""Canvas runs: a board's connected image nodes run as one durable graph workflow (workflows/canvas_run.py).

The board is read and checked as saved at the moment of the request; anything that would stop the run (a cycle,
a node without a prompt, an edge into a model that cannot take an image, a node a provider would refuse) is a 422
naming the nodes, before anything is stored or started.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Path
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError, RPCStatusCode

from api.admission import admit_start, admit_within_budgets, budgets_for
from api.auth import CallerDep, CanvasKeyPath
from api.deps import StateDep, TemporalDep, TraceParentDep
from api.errors import ApiError
from api.routes.jobs import job_from_request, job_settings
from core.db import transaction
from handoff.ends import end_canvas_run, why_workflow_gone
from handoff.sweep import canvas_run_start_confirmed
from models.payloads import CachedImage, CanvasRunInput, ImageJobInput, RunNodePlan
from models.schemas import (
    ID_PATTERN,
    Board,
    BoardNode,
    CanvasRunPreview,
    CanvasRunRequest,
    CanvasRunView,
    ErrorBody,
    StartImageJobRequest,
)
from models.tenancy import workflow_id_of
from models.vocabulary import JobStatus, NodeType
from planning.canvas_plan import (
    MAX_RUN_NODES,
    GraphRefused,
    RunGraph,
    content_hash,
    input_key,
    prompt_name,
    run_graph,
)
from store import canvas_runs, canvases, runs

router = APIRouter(prefix="/v1/canvases", tags=["canvas runs"])

RunIdPath = Path(alias="runId", pattern=ID_PATTERN)
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody},
    409: {"model": ErrorBody, "description": "The board has a run still running; `details` names it."},
    422: {"model": ErrorBody, "description": "The board cannot run as asked; `details` names the nodes."},
    429: {"model": ErrorBody, "description": "`budget_exceeded`: the run's estimate passes BUDGET_USD_PER_DAY."},
    503: {"model": ErrorBody},
}


def refused(code: str, message: str, nodes: list[str]) -> ApiError:
    return ApiError(422, code, message, [{"nodeId": node} for node in nodes])


def canvas_run_job_id(run_id: str, node_id: str) -> str:
    """The node's job in this run: fixed by the run, so a replayed or retried start never makes a second one."""
    return "job_" + hashlib.sha256(f"{run_id}:{node_id}".encode()).hexdigest()[:32]


def node_name(node: BoardNode) -> str:
    """How a refusal names a node: by its prompt (planning/canvas_plan.prompt_name), else its label (an upload's file
    name), else "The node <id>"; the ids are in the refusal's `details`."""
    label = node.data.get("label")
    fallback = f"“{label}”" if isinstance(label, str) and label else f"The node {node.id}"
    return prompt_name(str(node.data.get("prompt") or ""), fallback)


def current_image(node: BoardNode) -> str | None:
    """What a node shows and passes on (as the canvas app has it): the chosen variant, the job's, the upload."""
    for key in ("chosenImageUrl", "imageUrl", "sourceUrl"):
        value = node.data.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def job_request(canvas_id: str, node: BoardNode, previous_image: str | None) -> StartImageJobRequest:
    """The node's generation settings as a job request, in the same shape the canvas' Generate sends."""
    data = node.data
    spec = {
        "basePrompt": data.get("prompt") or "",
        "styleModifiers": data.get("styleModifiers") or [],
        "size": None if data.get("aspectRatio") else data.get("size"),
        "aspectRatio": data.get("aspectRatio"),
        "quality": data.get("quality"),
        "seed": data.get("seed"),
        "n": data.get("n") or 1,
        "previousImage": previous_image,
    }
    body = {"workflowId": canvas_id, "nodeId": node.id, "provider": data.get("provider") or "local"}
    body |= {"model": data.get("model"), "promptSpec": {key: value for key, value in spec.items() if value is not None}}
    try:
        return StartImageJobRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        raise refused("invalid_node", f"{node_name(node)}: {first['msg']}.", [node.id]) from error


def checked_job(
    state: StateDep, canvas: str, board: Board, node: BoardNode, *, upstream_image: str | None, in_run: bool
) -> tuple[StartImageJobRequest, ImageJobInput]:
    """The node's job (validated as POST /v1/jobs would), before its run-specific fields are set."""
    if not str(node.data.get("prompt") or "").strip():
        raise refused("missing_prompt", f"{node_name(node)} has no prompt: write one, or delete the node.", [node.id])
    # An upstream node of the run has no image yet; any URL lets the provider check that the model takes one.
    checked_image = f"{state.settings.app_url}/files/upstream-of-{node.id}.png" if in_run else upstream_image
    body = job_request(board.id, node, checked_image)
    try:
        job, _ = job_from_request(state, body, "job_check", canvas=canvas)
    except ApiError as error:
        code = "input_image_not_supported" if "previousImage" in error.message else error.code
        raise refused(code, f"{node_name(node)}: {error.message}", [node.id]) from error
    return body, job


def plan_canvas_run(
    state: StateDep,
    canvas: str,
    board: Board,
    request: CanvasRunRequest,
    run_id: str,
    made_from: Mapping[str, str],
) -> CanvasRunInput:
    """The run's nodes in order with their jobs and inputs' hashes, for the board of canvas key `canvas`;
    `made_from` maps the board's images to the hashes of the jobs that made them (planning/canvas_plan.input_key)."""
    image_nodes = [node.id for node in board.nodes if node.type == NodeType.IMAGE_GENERATION]
    try:
        graph: RunGraph = run_graph(
            image_nodes,
            [(edge.source, edge.target) for edge in board.edges],
            node_ids=request.node_ids,
            from_node=request.from_node_id,
        )
    except GraphRefused as error:
        by_id = {node.id: node for node in board.nodes}
        message = error.describe(lambda node_id: node_name(by_id[node_id]) if node_id in by_id else node_id)
        raise refused(error.code, message, error.nodes) from error
    if not graph.order:
        raise refused("nothing_to_run", "The board has no image generation nodes to run.", [])
    if len(graph.order) > MAX_RUN_NODES:
        raise refused("too_many_nodes", f"A run takes at most {MAX_RUN_NODES} nodes.", [])
    hashes: dict[str, str] = {}
    by_id = {node.id: node for node in board.nodes}
    nodes = [
        plan_node(state, canvas, board, by_id, graph, hashes, run_id, node_id, made_from) for node_id in graph.order
    ]
    return CanvasRunInput(
        run_id=run_id,
        canvas_id=canvas,
        nodes=nodes,
        force=request.force,
        max_parallel=state.settings.CANVAS_RUN_MAX_PARALLEL,
        priority=request.priority,
    )


def plan_node(
    state: StateDep,
    canvas: str,
    board: Board,
    by_id: dict[str, BoardNode],
    graph: RunGraph,
    hashes: dict[str, str],
    run_id: str,
    node_id: str,
    made_from: Mapping[str, str],
) -> RunNodePlan:
    """One node's job in the run, and its content hash (added to `hashes`, which holds those upstream of it)."""
    source = graph.upstream[node_id]
    in_run = source is not None and source in hashes
    outside_image = current_image(by_id[source]) if source in by_id and not in_run else None
    if source is not None and not in_run and outside_image is None:
        named, upstream = node_name(by_id[node_id]), node_name(by_id[source])
        message = f"{named} refines {upstream}, which has no image yet: generate it first."
        raise refused("upstream_without_image", message, [source])
    body, job = checked_job(state, canvas, board, by_id[node_id], upstream_image=outside_image, in_run=in_run)
    upstream_key = hashes[source] if in_run and source else input_key(outside_image, made_from)
    hashes[node_id] = content_hash(job_settings(body, job), upstream_key)
    job.job_id = canvas_run_job_id(run_id, node_id)
    job.content_hash = hashes[node_id]
    job.spec.previous_image = None if in_run else outside_image
    job.metadata = {**job.metadata, runs.CANVAS_RUN_METADATA_KEY: run_id, "contentHash": hashes[node_id]}
    return RunNodePlan(node_id, job, source if in_run else None, hashes[node_id])


async def mark_cached(session: AsyncSession, board: Board, plan: CanvasRunInput) -> None:
    """Mark the planned nodes whose shown job completed from the inputs they have now: the run reuses their image
    (the one the node shows, when its job made several) instead of paying for it again."""
    by_id = {node.id: node for node in board.nodes}
    shown = {
        node.node_id: (job_id, node.content_hash)
        for node in plan.nodes
        if isinstance(job_id := by_id[node.node_id].data.get("jobId"), str)
    }
    planned = {node.node_id: node for node in plan.nodes}
    for node_id, cached in (await canvas_runs.cached_images(session, shown=shown)).items():
        image = current_image(by_id[node_id]) or cached.image_url
        planned[node_id].cached = CachedImage(cached.job_id, image)


async def read_canvas_run_view(state: StateDep, canvas_id: str, run_id: str) -> CanvasRunView:
    async with state.sessions() as session:
        found = await canvas_runs.read_canvas_run(session, canvas_id=canvas_id, run_id=run_id)
    if found is None:
        raise ApiError(404, "run_not_found", f"No run {run_id!r} on canvas {workflow_id_of(canvas_id)!r}.")
    return CanvasRunView.from_rows(*found)


@router.post(
    "/{workflowId}/runs",
    status_code=202,
    response_model=CanvasRunView,
    responses={**ERRORS, 200: {"model": CanvasRunPreview, "description": "`dryRun`: what the run would do."}},
)
async def start_canvas_run(
    canvas_id: CanvasKeyPath,
    state: StateDep,
    after: BackgroundTasks,
    caller: CallerDep,
    trace_parent: TraceParentDep,
    body: CanvasRunRequest | None = None,
) -> CanvasRunView | JSONResponse:
    """Run the board's image nodes as saved now (all, `nodeIds`, or `fromNodeId` and below): an edge A -> B makes
    B refine A's image. A node whose shown image was made from the inputs it has now (by Generate, the API, the CLI
    or a run) is `cached`, reused rather than paid for again, unless `force`. With `dryRun`, nothing starts: the
    answer (200) says what would be generated, reused and what it would cost. A board runs one run at a time: while
    one is active, another start answers 409 `run_active` naming it.

    The answer comes once the run and its plan are committed; its workflow is started right after (by this
    process, or by the workers' sweep should this process die first)."""
    request = body or CanvasRunRequest()
    async with state.sessions() as session:
        board = await canvases.read_board(session, canvas_id=canvas_id)
        if board is None:
            raise ApiError(404, "canvas_not_found", f"No canvas {workflow_id_of(canvas_id)!r}.")
        images = [image for image in map(current_image, board.nodes) if image]
        made_from = await canvas_runs.image_hashes(session, canvas_id=canvas_id, image_urls=images)
        plan = plan_canvas_run(state, canvas_id, board, request, "run_" + uuid.uuid4().hex, made_from)
        await mark_cached(session, board, plan)
    preview = CanvasRunPreview.of(plan)
    if request.dry_run:
        return JSONResponse(preview.model_dump(mode="json", by_alias=True, exclude_none=True))
    plan.trace_parent = trace_parent
    await admit_start(state, caller)  # a run is one start, however many nodes it has
    budgets = budgets_for(state, caller)
    async with transaction(state.sessions) as session:
        if budgets and preview.estimated_cost_usd:
            # The whole run's estimate up front; its jobs are recorded as they start, so this admits the run.
            await admit_within_budgets(session, budgets, preview.estimated_cost_usd)
        active = await canvas_runs.create_canvas_run(session, plan=plan)
    if active is not None:
        raise ApiError(
            409,
            "run_active",
            f"Run {active} is still running on this board; wait for it or cancel it first.",
            [{"runId": active}],
        )
    after.add_task(state.handoff.start_canvas_run, plan)
    return await read_canvas_run_view(state, canvas_id, plan.run_id)


@router.get("/{workflowId}/runs/{runId}", response_model=CanvasRunView, responses=ERRORS)
async def get_canvas_run(canvas_id: CanvasKeyPath, state: StateDep, run_id: str = RunIdPath) -> CanvasRunView:
    """The run's status and each node's state (pending, running, completed, cached, failed, skipped, cancelled)."""
    return await read_canvas_run_view(state, canvas_id, run_id)


@router.post("/{workflowId}/runs/{runId}/cancel", status_code=202, response_model=CanvasRunView, responses=ERRORS)
async def cancel_canvas_run(
    canvas_id: CanvasKeyPath, state: StateDep, temporal: TemporalDep, run_id: str = RunIdPath
) -> CanvasRunView:
    """Cancel the run: running nodes' jobs are cancelled, pending nodes are marked cancelled. A run whose start is
    still to come is started first, so that its workflow's own cancellation ends it and its nodes."""
    view = await read_canvas_run_view(state, canvas_id, run_id)
    if view.finished_at is not None:
        return view
    handle = temporal.get_workflow_handle(run_id)
    try:
        try:
            await handle.cancel()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            async with state.sessions() as session:
                plan = await canvas_runs.unstarted_plan(
                    session, run_id=run_id, max_parallel=state.settings.CANVAS_RUN_MAX_PARALLEL
                )
            if plan is not None:
                await canvas_run_start_confirmed(temporal, state.settings, state.autocommit_sessions, plan)
                await handle.cancel()
        gone = await why_workflow_gone(temporal, run_id)
    except RPCError as error:
        raise ApiError(503, "temporal_unavailable", f"Could not cancel the run: {error.message}") from error
    if gone is None:
        return view
    # The workflow had closed without ending the run (terminated from outside: Temporal takes the cancel of a closed
    # workflow and does nothing), so the cancel ends it; one that ended the run itself meanwhile changes nothing.
    cancelled = JobStatus.CANCELLED
    await end_canvas_run(temporal, state.settings, state.sessions, run_id, canvas_id, cancelled)
    return await read_canvas_run_view(state, canvas_id, run_id)
