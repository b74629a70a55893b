"""Boards (React Flow's `{nodes, edges, viewport}`) and their nodes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from pydantic import Field

from api.deps import CanvasIdPath, SessionDep, StateDep
from api.errors import ApiError
from core import canvases, runs
from core.db import transaction
from models.schemas import (
    ID_PATTERN,
    Board,
    BoardSave,
    CanvasList,
    CanvasNode,
    CanvasNodes,
    ErrorBody,
    JsonObject,
    NewCanvas,
    NodePosition,
    RequestModel,
)

router = APIRouter(prefix="/v1/canvases", tags=["canvases"])


class NodeUpsert(RequestModel):
    """A node as the canvas sends it; job-owned data fields (imageUrl, status, progress, ...) are ignored."""

    type: str | None = Field(default=None, max_length=64, examples=["image"])
    position: NodePosition | None = None
    data: JsonObject | None = Field(default=None, examples=[{"label": "Hero image"}])


@router.get("", response_model=CanvasList)
async def list_boards(session: SessionDep) -> CanvasList:
    """Every canvas, the most recently changed first: id, name, node count, last change."""
    return CanvasList(items=await canvases.list_canvases(session))


@router.post("", status_code=201, response_model=Board, responses={422: {"model": ErrorBody}})
async def create_board(state: StateDep, body: NewCanvas | None = None) -> Board:
    """A new, empty canvas with a fresh id."""
    async with transaction(state.sessions) as session:
        canvas = await canvases.create_canvas(session, (body or NewCanvas()).name)
    return await read_board_or_404(state, canvas.id)


@router.get("/{workflowId}", response_model=Board, responses={404: {"model": ErrorBody}})
async def get_board(canvas_id: CanvasIdPath, state: StateDep) -> Board:
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
    canvas_id: CanvasIdPath,
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
            await canvases.save_board(session, canvas_id, body, expected_version=expected)
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


async def read_board_or_404(state: StateDep, canvas_id: str) -> Board:
    async with state.sessions() as session:
        board = await canvases.read_board(session, canvas_id)
    if board is None:
        raise ApiError(404, "canvas_not_found", f"No canvas {canvas_id!r}; create one with POST /v1/canvases.")
    return board


@router.get("/{workflowId}/nodes", response_model=CanvasNodes)
async def list_canvas_nodes(canvas_id: CanvasIdPath, session: SessionDep) -> CanvasNodes:
    """The canvas' nodes as React Flow nodes (`{id, type, position, data}`)."""
    return CanvasNodes(items=[CanvasNode.from_row(node) for node in await runs.list_nodes(session, canvas_id)])


@router.put("/{workflowId}/nodes/{node_id}", response_model=CanvasNode, responses={422: {"model": ErrorBody}})
async def upsert_canvas_node(
    body: NodeUpsert,
    state: StateDep,
    canvas_id: CanvasIdPath,
    node_id: str = Path(pattern=ID_PATTERN),
) -> CanvasNode:
    """Create or replace a node's type, position and data; the fields a job writes stay the job's."""
    async with transaction(state.sessions) as session:
        node = await runs.upsert_node(
            session,
            canvas_id=canvas_id,
            node_id=node_id,
            node_type=body.type,
            position=body.position.model_dump() if body.position else None,
            data=body.data,
        )
        return CanvasNode.from_row(node)
