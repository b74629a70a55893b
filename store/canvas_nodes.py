"""`workflow_nodes`: the canvas' React Flow nodes, and the fields a job owns on its node (status, progress, result),
written only while the job owns the node and never over an end already shown."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.guards import assert_storable_json
from models.payloads import NodeUpdate, ProgressUpdate, RunTransition
from models.results import Transitioned
from models.tables import WorkflowNode
from models.vocabulary import (
    ENDED_NODE_STATUSES,
    JOB_OWNED_NODE_FIELDS,
    NODE_STATUS_OF_JOB,
    TERMINAL_STATUSES,
    EventKind,
    JobStatus,
)
from store.jsonb import storable_json
from store.run_events import add_event
from store.runs import (
    ENDED_COST_SQL,
    progress_parameters,
    progress_sql,
    transition,
    transition_parameters,
    transition_sql,
    transitioned,
)

ENDED_NODE_SQL = ", ".join(f"'{status}'" for status in sorted(ENDED_NODE_STATUSES))


def _update_node_sql(*, with_cost: bool, when: str = "TRUE") -> str:
    # A job's end shows its cost, by the rule `transition` applies to the run (the node is written first);
    # progress writes skip it. `when`: a further condition, for the statements this one is part of.
    cost = (
        f"   || COALESCE((SELECT jsonb_build_object('costUsd', {ENDED_COST_SQL}) FROM runs"
        f"      WHERE id = :job AND {ENDED_COST_SQL} IS NOT NULL), '{{}}')"
    )
    return (
        "UPDATE workflow_nodes SET node_data = (node_data - CAST(:unset AS text[])) || CAST(:patch AS jsonb)"
        + (cost if with_cost else "")
        + "   || jsonb_build_object('updatedAt', now()),"
        " version = version + 1, updated_at = now()"
        " WHERE canvas_id = :canvas AND id = :node AND owner_job_id = :job"
        "   AND NOT (node_data @> CAST(:patch AS jsonb) AND NOT node_data ?| CAST(:unset AS text[]))"
        f"   AND NOT (node_data->>'jobId' = :job AND node_data->>'status' IN ({ENDED_NODE_SQL})) AND {when}"
        " RETURNING id"
    )


_UPDATE_NODE = text(_update_node_sql(with_cost=False))


_UPDATE_ENDED_NODE = text(_update_node_sql(with_cost=True))


# A job's move to `running`, its event and its node, in one statement. A job running or ended already moves
# nothing; `_START_RUNNING_UNCAPPED` also leaves alone the job of a tenant with a running cap of its own.
_SHOW_RUNNING = f", shown AS ({_update_node_sql(with_cost=False, when='EXISTS (SELECT 1 FROM moved)')})"
_START_RUNNING = transition_sql(then=_SHOW_RUNNING)
_START_RUNNING_UNCAPPED = transition_sql(
    guard=" AND NOT EXISTS (SELECT 1 FROM tenants WHERE id = :tenant AND max_concurrent_jobs IS NOT NULL)",
    then=_SHOW_RUNNING,
)


# A job's progress, its event and its node, in one statement; a repeat (its dedupe key seen) leaves the node be.
_RECORD_PROGRESS = progress_sql(
    then=f", shown AS ({_update_node_sql(with_cost=False, when='EXISTS (SELECT 1 FROM told)')})"
)


# A cancelled job gives its node back as it was before: the newest job that ended there (its status, error and
# cost; the image it made never left the node), or no job at all. The node is no longer the job's to write.
_RESTORE_NODE = text(
    "UPDATE workflow_nodes SET node_data = (node_data - CAST(:job_keys AS text[]))"
    "   || COALESCE((SELECT jsonb_strip_nulls(jsonb_build_object("
    "       'jobId', r.id, 'status', CASE r.status WHEN 'completed' THEN 'completed' ELSE 'error' END,"
    "       'progress', CASE r.status WHEN 'completed' THEN 100 END, 'error', r.error,"
    "       'costUsd', r.cost_usd, 'estimatedCostUsd', r.estimated_cost_usd))"
    "     FROM runs r WHERE r.canvas_id = :canvas AND r.node_id = :node AND r.id <> :job"
    "       AND r.status IN ('completed', 'failed')"
    "     ORDER BY r.finished_at DESC NULLS LAST LIMIT 1), '{}')"
    "   || jsonb_build_object('updatedAt', now()),"
    " owner_job_id = NULL, owner_since = NULL, version = version + 1, updated_at = now()"
    " WHERE canvas_id = :canvas AND id = :node AND owner_job_id = :job"
    " RETURNING id"
)


# The fields a job writes on its node that the restore puts back (its image fields stay as they are).
RESTORED_KEYS = ("jobId", "status", "progress", "error", "costUsd", "estimatedCostUsd", "retry", "waitingForSlot")


async def update_node(session: AsyncSession, *, update: NodeUpdate) -> bool:
    """Merge job-owned fields into the node in one statement, only while `update.job_id` owns it and has not
    shown an end there yet; a cancellation restores the node instead (`_RESTORE_NODE`).

    An end is final on the node as on the run: a progress write or a `running` from an activity that outlived
    its job's cancellation never covers the end. A write that would change nothing is skipped, so a retried
    activity does not bump the node's version. Unset fields are absent from the node, never null.
    """
    if update.status == JobStatus.CANCELLED:
        keys = {"canvas": update.canvas_id, "node": update.node_id, "job": update.job_id}
        restored = await session.execute(_RESTORE_NODE, {**keys, "job_keys": list(RESTORED_KEYS)})
        return restored.first() is not None
    updated = await session.execute(
        _UPDATE_ENDED_NODE if update.status in TERMINAL_STATUSES else _UPDATE_NODE, _node_parameters(update)
    )
    return updated.first() is not None


def _node_parameters(update: NodeUpdate) -> dict[str, Any]:
    """The parameters of `_update_node_sql` for `update`: the fields it sets and the ones it clears."""
    fields: dict[str, Any] = {
        "jobId": update.job_id,
        "status": NODE_STATUS_OF_JOB[JobStatus(update.status)],
        "error": update.error,
        "imageUrl": update.image_url,
        "imageUrls": update.image_urls,
        "thumbnailUrl": update.thumbnail_url,
        "progress": update.progress,
    }
    patch = {key: value for key, value in fields.items() if value is not None}
    return {
        "canvas": update.canvas_id,
        "node": update.node_id,
        "job": update.job_id,
        "patch": storable_json(patch, what="node"),
        # A job that writes its node again has left its tenant's line, if it was in it (store/tenants.py).
        "unset": ["retry", "waitingForSlot", *(["error"] if update.error is None else [])],
        "status": update.status,
        "cost": update.cost_usd,
    }


async def end_run(session: AsyncSession, *, change: RunTransition, canvas_id: str, node_id: str) -> Transitioned | None:
    """A job's end recorded from outside its workflow: the run's (`runs.transition`) and, when the run moved, its
    node's, in the caller's transaction. None when the run had ended already."""
    ended = await transition(session, change=change)
    if ended is not None:
        node = NodeUpdate(canvas_id, node_id, change.job_id, JobStatus(change.status), error=change.error)
        await update_node(session, update=node)
    return ended


async def start_running(session: AsyncSession, *, update: NodeUpdate, unless_capped: str | None = None) -> bool:
    """Move the job to `running` and its node with it (`update`), in one round trip; with `unless_capped` (its
    tenant), only while that tenant has no running cap of its own. False when nothing moved: a capped tenant, or
    a job running or ended already."""
    change = RunTransition(job_id=update.job_id, status=JobStatus.RUNNING)
    parameters = {**transition_parameters(change), **_node_parameters(update), "tenant": unless_capped}
    statement = _START_RUNNING if unless_capped is None else _START_RUNNING_UNCAPPED
    return transitioned((await session.execute(statement, parameters)).first()) is not None


async def record_progress(session: AsyncSession, *, update: ProgressUpdate) -> bool:
    """Store the job's progress on its run, its event and its node, in one round trip, while the run has not
    ended; False when ignored (ended, or a repeat of its dedupe key)."""
    node = NodeUpdate(
        canvas_id=update.canvas_id,
        node_id=update.node_id,
        job_id=update.job_id,
        status=JobStatus.RUNNING,
        progress=update.progress,
    )
    parameters = {
        **_node_parameters(node),
        **progress_parameters(
            job_id=update.job_id, progress=update.progress, message=update.message, dedupe_key=update.dedupe_key
        ),
    }
    return bool((await session.execute(_RECORD_PROGRESS, parameters)).scalar_one())


async def note_retry(session: AsyncSession, *, update: NodeUpdate, message: str, attempt: int) -> None:
    """A failed attempt that will be tried again, said where people look: a `log` event (`data.moment` `retry`) and
    the node's `retry` note, which the job's next write to the node clears."""
    await add_event(
        session,
        run_id=update.job_id,
        kind=EventKind.LOG,
        message=message,
        payload={"moment": "retry"},
        dedupe_key=f"retry-{attempt}",
    )
    await session.execute(
        text(
            "UPDATE workflow_nodes SET node_data = node_data || jsonb_build_object('retry', CAST(:note AS text)),"
            " version = version + 1, updated_at = now()"
            " WHERE canvas_id = :canvas AND id = :node AND owner_job_id = :job"
        ),
        {"note": message, "canvas": update.canvas_id, "node": update.node_id, "job": update.job_id},
    )


async def list_nodes(session: AsyncSession, *, canvas_id: str) -> list[WorkflowNode]:
    # Nodes saved in one transaction share created_at; their ids keep the order stable.
    query = (
        select(WorkflowNode)
        .where(WorkflowNode.canvas_id == canvas_id)
        .order_by(col(WorkflowNode.created_at), col(WorkflowNode.id))
    )
    return list((await session.execute(query)).scalars())


async def nodes_by_id(session: AsyncSession, *, canvas_id: str, node_ids: list[str]) -> list[WorkflowNode]:
    """Only these nodes of the canvas (a stream reading what a notification named)."""
    query = select(WorkflowNode).where(WorkflowNode.canvas_id == canvas_id, col(WorkflowNode.id).in_(node_ids))
    return list((await session.execute(query)).scalars())


async def upsert_node(
    session: AsyncSession,
    *,
    canvas_id: str,
    node_id: str,
    node_type: str | None,
    position: dict[str, Any] | None,
    data: dict[str, Any] | None,
    only_if_changed: bool = False,
) -> WorkflowNode:
    """Create or replace a node's type, position and data as the canvas sends them.

    The job-owned fields (result, status, progress) stay the job's: they are taken from the stored row,
    which is locked for the statement's transaction so a job's write cannot slip in between. With
    `only_if_changed`, a node that would stay as it is keeps its version (and no open board hears of it).
    """
    assert_storable_json(data or {}, what="node data")
    existing = await session.execute(
        select(WorkflowNode).where(WorkflowNode.canvas_id == canvas_id, WorkflowNode.id == node_id).with_for_update()
    )
    node = existing.scalars().first()
    if node is None:
        node = WorkflowNode(canvas_id=canvas_id, id=node_id, node_data={}, position={"x": 0, "y": 0}, version=0)
        session.add(node)
    before = (dict(node.node_data), dict(node.position), node.node_type)
    if data is not None:
        owned = {key: node.node_data[key] for key in JOB_OWNED_NODE_FIELDS if key in node.node_data}
        user_data = {key: value for key, value in data.items() if key not in JOB_OWNED_NODE_FIELDS}
        node.node_data = {**user_data, **owned}
    if position is not None:
        node.position = position
    if node_type is not None:
        node.node_type = node_type
    if only_if_changed and node.version and before == (node.node_data, node.position, node.node_type):
        return node
    node.version += 1
    node.updated_at = datetime.now(UTC)
    await session.flush()
    return node
