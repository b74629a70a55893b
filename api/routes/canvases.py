"""Boards (React Flow's `{nodes, edges, viewport}`) and their nodes."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, Response
from pydantic import Field
from temporalio.service import RPCError, RPCStatusCode

from api.auth import CallerDep, CanvasKeyPath
from api.deps import NodeIdPath, SessionDep, StateDep
from api.errors import ApiError
from core.db import transaction
from models.schemas import (
    Board,
    BoardNode,
    BoardSave,
    CanvasList,
    CanvasNodes,
    CanvasRename,
    ErrorBody,
    JsonObject,
    NewCanvas,
    NodePosition,
    RequestModel,
)
from models.tenancy import workflow_id_of
from store import canvas_nodes, canvases

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/canvases", tags=["canvases"])


class NodeUpsert(RequestModel):
    """A node as the canvas sends it; job-owned data fields (imageUrl, status, progress, ...) are ignored."""

    type: str | None = Field(default=None, max_length=64, examples=["image"])
    position: NodePosition | None = None
    data: JsonObject | None = Field(default=None, examples=[{"label": "Hero image"}])


@router.get("", response_model=CanvasList)
async def list_boards(session: SessionDep, caller: CallerDep) -> CanvasList:
    """Every canvas of the caller's tenant, the most recently changed first: id, name, node count, last change."""
    return CanvasList(items=await canvases.list_canvases(session, tenant_id=caller.tenant_id))


@router.post("", status_code=201, response_model=Board, responses={422: {"model": ErrorBody}})
async def create_board(state: StateDep, caller: CallerDep, body: NewCanvas | None = None) -> Board:
    """A new, empty canvas with a fresh id."""
    async with transaction(state.sessions) as session:
        canvas = await canvases.create_canvas(session, tenant_id=caller.tenant_id, name=(body or NewCanvas()).name)
    return await read_board_or_404(state, canvas.id)


@router.get("/{workflowId}", response_model=Board, responses={404: {"model": ErrorBody}})
async def get_board(canvas_id: CanvasKeyPath, state: StateDep) -> Board:
    """The board as React Flow restores it: `nodes`, `edges` and `viewport`, plus its name and version."""
    return await read_board_or_404(state, canvas_id)


@router.put(
    "/{workflowId}",
    response_model=Board,
    responses={
        409: {"model": ErrorBody, "description": "Saved since `version` (or `If-Match`); `details` has the current."},
        422: {"model": ErrorBody},
    },
)
async def save_board(
    canvas_id: CanvasKeyPath,
    body: BoardSave,
    state: StateDep,
    if_match: Annotated[str | None, Header(max_length=32, description="The board version, as `version`.")] = None,
) -> Board:
    """Save the whole board as `toObject()` gives it: nodes missing from it are deleted, edges are replaced, and
    the fields a job writes into a node (image, status, progress, error) stay the job's. With `version` (or
    `If-Match`), a board saved by someone else since answers 409 and changes nothing."""
    expected = body.version if body.version is not None else parse_if_match(if_match)
    try:
        async with transaction(state.sessions) as session:
            await canvases.save_board(session, canvas_id=canvas_id, board=body, expected_version=expected)
    except canvases.StaleBoard as stale:
        raise ApiError(
            409,
            "board_version_conflict",
            f"The board was saved by someone else since version {expected} (it is at {stale.current});"
            " load it, merge your changes and save again.",
            [{"currentVersion": stale.current}],
        ) from stale
    return await read_board_or_404(state, canvas_id)


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: 7` or `If-Match: "7"` (an ETag); None when absent."""
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise ApiError(400, "invalid_if_match", 'If-Match takes the board\'s version, e.g. `If-Match: "7"`.')
    return int(tag)


@router.patch("/{workflowId}", response_model=Board, responses={404: {"model": ErrorBody}, 422: {"model": ErrorBody}})
async def rename_board(canvas_id: CanvasKeyPath, body: CanvasRename, state: StateDep) -> Board:
    """Rename the canvas."""
    async with transaction(state.sessions) as session:
        renamed = await canvases.rename_canvas(session, canvas_id=canvas_id, name=body.name)
    if not renamed:
        raise ApiError(404, "canvas_not_found", f"No canvas {workflow_id_of(canvas_id)!r}.")
    return await read_board_or_404(state, canvas_id)


@router.delete("/{workflowId}", status_code=204, responses={404: {"model": ErrorBody}})
async def delete_board(canvas_id: CanvasKeyPath, state: StateDep) -> Response:
    """Delete the canvas: its board goes, its running jobs and canvas runs are cancelled, and it answers 404 from
    then on. Its jobs' records and images stay."""
    async with transaction(state.sessions) as session:
        deleted = await canvases.delete_canvas(session, canvas_id=canvas_id)
    if deleted is None:
        raise ApiError(404, "canvas_not_found", f"No canvas {workflow_id_of(canvas_id)!r}.")
    await cancel_all(state, [*deleted.canvas_run_ids, *deleted.job_ids])
    return Response(status_code=204)


async def cancel_all(state: StateDep, workflow_ids: list[str]) -> None:
    """Cancel these workflows, as far as Temporal can be reached: the board is gone either way, and what still
    runs can no longer write to it."""
    if not workflow_ids:
        return
    try:
        temporal = await state.temporal_client()
    except Exception as error:  # the client's connect raises bare RuntimeErrors
        log.warning("could not cancel %d workflows of a deleted canvas: %s", len(workflow_ids), error)
        return
    for workflow_id in workflow_ids:
        try:
            await temporal.get_workflow_handle(workflow_id).cancel()
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                log.warning("could not cancel %s of a deleted canvas: %s", workflow_id, error.message)


async def read_board_or_404(state: StateDep, canvas_id: str) -> Board:
    async with state.sessions() as session:
        board = await canvases.read_board(session, canvas_id=canvas_id)
    if board is None:
        raise ApiError(
            404, "canvas_not_found", f"No canvas {workflow_id_of(canvas_id)!r}; create one with POST /v1/canvases."
        )
    return board


@router.get("/{workflowId}/nodes", response_model=CanvasNodes)
async def list_canvas_nodes(canvas_id: CanvasKeyPath, session: SessionDep) -> CanvasNodes:
    """The canvas' nodes as React Flow nodes (`{id, type, position, data}`)."""
    return CanvasNodes(
        items=[BoardNode.from_row(node) for node in await canvas_nodes.list_nodes(session, canvas_id=canvas_id)]
    )


@router.put("/{workflowId}/nodes/{nodeId}", response_model=BoardNode, responses={422: {"model": ErrorBody}})
async def upsert_canvas_node(
    body: NodeUpsert,
    state: StateDep,
    canvas_id: CanvasKeyPath,
    node_id: NodeIdPath,
) -> BoardNode:
    """Create or replace a node's type, position and data; the fields a job writes stay the job's."""
    async with transaction(state.sessions) as session:
        node = await canvas_nodes.upsert_node(
            session,
            canvas_id=canvas_id,
            node_id=node_id,
            node_type=body.type,
            position=body.position.model_dump() if body.position else None,
            data=body.data,
        )
        return BoardNode.from_row(node)
