"""Canvas nodes as React Flow nodes."""

from __future__ import annotations

from fastapi import APIRouter, Path
from pydantic import Field

from api.deps import CanvasIdPath, SessionDep, StateDep
from core import runs
from core.db import transaction
from models.schemas import ID_PATTERN, CanvasNode, CanvasNodes, ErrorBody, JsonObject, NodePosition, RequestModel

router = APIRouter(prefix="/v1/canvases", tags=["canvases"])


class NodeUpsert(RequestModel):
    """A node as the canvas sends it; job-owned data fields (imageUrl, status, progress, ...) are ignored."""

    type: str | None = Field(default=None, max_length=64, examples=["image"])
    position: NodePosition | None = None
    data: JsonObject | None = Field(default=None, examples=[{"label": "Hero image"}])


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
