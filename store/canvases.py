"""Every SQL statement about boards: the canvas list, a board's name, viewport and edges, and a board's save.

Nodes live in `workflow_nodes` (store/runs.py writes the fields a job owns). A save writes what the person owns:
the node set, types, positions and their own `data` keys; a node's job-owned keys stay as the job wrote them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.db import lock_until_commit
from models.guards import assert_storable_json
from models.schemas import Board, BoardEdge, BoardNode, BoardSave, CanvasSummary, Viewport
from models.tables import Canvas, CanvasEdge, WorkflowNode
from models.tenancy import canvas_key, workflow_id_of
from store import canvas_nodes, runs

CANVAS_LIST_LIMIT = 500


def new_canvas_id() -> str:
    return "canvas-" + secrets.token_hex(6)


# A node's picture for the canvas list: its thumbnail, else its image (an upload has no thumbnail of ours).
_NODE_PICTURE = "COALESCE(t.node_data->>'thumbnailUrl', t.node_data->>'imageUrl', t.node_data->>'sourceUrl')"
THUMBNAILS_PER_CANVAS = 4


async def list_canvases(session: AsyncSession, *, tenant_id: str) -> list[CanvasSummary]:
    """The tenant's boards, newest change first: saved ones and those only jobs have written to (`implicit`),
    each with the pictures of its most recently changed nodes."""
    found = await session.execute(
        text(
            "WITH boards AS ("
            "  SELECT id, name, false AS implicit, updated_at FROM canvases WHERE tenant_id = :tenant"
            "  UNION ALL"
            "  SELECT DISTINCT n.canvas_id, NULL, true, NULL::timestamptz FROM workflow_nodes n"
            "  WHERE n.tenant_id = :tenant AND NOT EXISTS (SELECT 1 FROM canvases c WHERE c.id = n.canvas_id)"
            ")"
            " SELECT b.id, b.name, b.implicit, count(n.id), greatest(b.updated_at, max(n.updated_at)) AS changed,"
            f"  ARRAY(SELECT {_NODE_PICTURE} FROM workflow_nodes t"
            f"   WHERE t.canvas_id = b.id AND {_NODE_PICTURE} IS NOT NULL"
            "    ORDER BY t.updated_at DESC LIMIT :pictures)"
            " FROM boards b LEFT JOIN workflow_nodes n ON n.canvas_id = b.id"
            " GROUP BY b.id, b.name, b.implicit, b.updated_at ORDER BY changed DESC LIMIT :limit"
        ),
        {"limit": CANVAS_LIST_LIMIT, "pictures": THUMBNAILS_PER_CANVAS, "tenant": tenant_id},
    )
    return [
        CanvasSummary(
            id=workflow_id_of(canvas_id),
            name=name or workflow_id_of(canvas_id),
            implicit=implicit,
            node_count=count,
            updated_at=changed,
            thumbnails=list(pictures),
        )
        for canvas_id, name, implicit, count, changed, pictures in found.all()
    ]


async def create_canvas(session: AsyncSession, *, tenant_id: str, name: str) -> Canvas:
    key = canvas_key(tenant_id, new_canvas_id())
    canvas = Canvas(id=key, name=name, viewport=Viewport().model_dump(), version=1)
    session.add(canvas)
    await session.flush()
    return canvas


async def read_board(session: AsyncSession, *, canvas_id: str) -> Board | None:
    """The board, or None when neither a save nor a job ever wrote to it."""
    canvas = await session.get(Canvas, canvas_id)
    nodes = await canvas_nodes.list_nodes(session, canvas_id=canvas_id)
    if canvas is None and not nodes:
        return None
    edges = await session.execute(
        select(CanvasEdge).where(CanvasEdge.canvas_id == canvas_id).order_by(col(CanvasEdge.id))
    )
    updated = max([node.updated_at for node in nodes] + ([canvas.updated_at] if canvas else []))
    return Board(
        id=workflow_id_of(canvas_id),
        name=canvas.name if canvas else workflow_id_of(canvas_id),
        version=canvas.version if canvas else 0,
        nodes=[BoardNode.from_row(node) for node in nodes],
        edges=[BoardEdge.from_row(edge) for edge in edges.scalars()],
        viewport=Viewport(**canvas.viewport) if canvas else Viewport(),
        updated_at=updated,
    )


class StaleBoard(Exception):
    """A save made from a version of the board that is no longer the current one."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the board is at version {current}")
        self.current = current


async def lock_board(session: AsyncSession, *, canvas_id: str) -> None:
    """Serialise the writes that touch many of a board's nodes (saves, run starts) until the transaction ends:
    they then never wait on each other's row locks in opposite orders (a deadlock), nor race a version check."""
    await lock_until_commit(session, f"board:{canvas_id}")


async def save_board(session: AsyncSession, *, canvas_id: str, board: BoardSave, expected_version: int | None) -> None:
    """Make the stored board the one sent: its name and viewport, its node set (what is missing is deleted), each
    node's type, position and own data, and its edges (replaced). One transaction; the caller commits.

    With `expected_version`, a board saved since (by another tab or client) raises StaleBoard and writes nothing:
    the caller merges and saves again, so no one's change is silently lost."""
    await lock_board(session, canvas_id=canvas_id)
    if expected_version is not None:
        current = await board_version(session, canvas_id=canvas_id)
        if current != expected_version:
            raise StaleBoard(current)
    await _upsert_canvas(session, canvas_id, board)
    keep = [node.id for node in board.nodes]
    await session.execute(
        delete(WorkflowNode).where(
            col(WorkflowNode.canvas_id) == canvas_id, col(WorkflowNode.id).not_in(keep)
        )  # an empty `keep` deletes every node
    )
    for node in board.nodes:
        await canvas_nodes.upsert_node(
            session,
            canvas_id=canvas_id,
            node_id=node.id,
            node_type=node.type,
            position=node.position.model_dump(),
            data=node.data,
            only_if_changed=True,
        )
    await session.execute(delete(CanvasEdge).where(col(CanvasEdge.canvas_id) == canvas_id))
    for edge in board.edges:
        session.add(
            CanvasEdge(
                canvas_id=canvas_id,
                id=edge.id,
                source=edge.source,
                target=edge.target,
                source_handle=edge.source_handle,
                target_handle=edge.target_handle,
                edge_type=edge.type,
                edge_data=edge.data,
            )
        )
    await session.flush()


async def _upsert_canvas(session: AsyncSession, canvas_id: str, board: BoardSave) -> None:
    viewport = board.viewport.model_dump()
    assert_storable_json(viewport, what="viewport")
    await session.execute(
        text(
            "INSERT INTO canvases (id, name, viewport, version) VALUES (:id, :name, CAST(:viewport AS jsonb), 1)"
            " ON CONFLICT (id) DO UPDATE SET name = COALESCE(CAST(:given_name AS varchar), canvases.name),"
            "   viewport = EXCLUDED.viewport, version = canvases.version + 1, updated_at = :now"
        ),
        {
            "id": canvas_id,
            "name": board.name or workflow_id_of(canvas_id),
            "given_name": board.name,
            "viewport": json.dumps(viewport),
            "now": datetime.now(UTC),
        },
    )


async def board_version(session: AsyncSession, *, canvas_id: str) -> int:
    """The board's save count (0 before its first save)."""
    found = await session.execute(text("SELECT version FROM canvases WHERE id = :id"), {"id": canvas_id})
    return int(found.scalar_one_or_none() or 0)


async def rename_canvas(session: AsyncSession, *, canvas_id: str, name: str) -> bool:
    """Give the canvas a name (a canvas only jobs have written to gets its row now); False when there is no such
    canvas."""
    if await read_board(session, canvas_id=canvas_id) is None:
        return False
    await session.execute(
        text(
            "INSERT INTO canvases (id, name, version) VALUES (:id, :name, 1)"
            " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = canvases.version + 1, updated_at = now()"
        ),
        {"id": canvas_id, "name": name},
    )
    return True


@dataclass(frozen=True)
class DeletedCanvas:
    """What a deleted canvas still had running: its unfinished jobs and canvas runs, for the caller to cancel."""

    job_ids: list[str]
    canvas_run_ids: list[str]


async def delete_canvas(session: AsyncSession, *, canvas_id: str) -> DeletedCanvas | None:
    """Delete the board (its row, nodes and edges); None when there is no such canvas. Its jobs' records and
    images stay (they are the history); what still runs is returned to be cancelled."""
    await lock_board(session, canvas_id=canvas_id)
    if await read_board(session, canvas_id=canvas_id) is None:
        return None
    running = await session.execute(
        text(f"SELECT id FROM runs WHERE canvas_id = :canvas AND status NOT IN ({runs.TERMINAL_SQL})"),
        {"canvas": canvas_id},
    )
    active = await session.execute(
        text("SELECT id FROM canvas_runs WHERE canvas_id = :canvas AND finished_at IS NULL"), {"canvas": canvas_id}
    )
    for table in ("workflow_nodes", "canvas_edges"):
        await session.execute(text(f"DELETE FROM {table} WHERE canvas_id = :canvas"), {"canvas": canvas_id})
    await session.execute(text("DELETE FROM canvases WHERE id = :canvas"), {"canvas": canvas_id})
    return DeletedCanvas(job_ids=list(running.scalars()), canvas_run_ids=list(active.scalars()))
