"""Every SQL statement about runs, their events and canvas nodes; used by the API and the activities.

Writes are idempotent so that Temporal may retry any activity: runs are inserted once, each status change is
one event with a dedupe key, terminal statuses are final, and a node only accepts writes from the job that
owns it (the newest one started for that node).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import TextClause, func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.errors import PROVIDER_TIMEOUT
from models.guards import STORED_WRAPPER_DEPTH, assert_storable_json
from models.payloads import ImageJobInput, NodeUpdate, RunTransition, StoredImage
from models.results import PROGRESS_KEY, RunResult, Transitioned
from models.schemas import ImagePromptSpec
from models.tables import Run, RunEvent, WorkflowNode
from models.vocabulary import (
    ENDED_NODE_STATUSES,
    EVENT_KIND_BY_STATUS,
    JOB_OWNED_NODE_FIELDS,
    NODE_STATUS_OF_JOB,
    TERMINAL_STATUSES,
    EventKind,
    JobStatus,
    NodeStatus,
    job_event,
)
from store import outbound

# The metadata key naming the canvas run that started a job (api/routes/canvas_runs.py sets it).
CANVAS_RUN_METADATA_KEY = "canvasRunId"
# The prompt a job shows on its node; the run keeps the whole of it (node data is capped at 64 KiB of JSON).
NODE_PROMPT_CHARS = 4000
# Terminal statuses as a literal SQL list: constants, and an expanding parameter would be rendered anew on every
# execution.
TERMINAL_SQL = ", ".join(f"'{status}'" for status in sorted(TERMINAL_STATUSES))
# What an ended job (:status) cost, from the provider's own figure (:cost) and the run's estimate: that figure;
# else, completed, the estimate; else (failed or cancelled, not billed) 0 for a priced model, NULL for an unpriced.
ENDED_COST_SQL = (
    "(CASE WHEN CAST(:cost AS double precision) IS NOT NULL THEN CAST(:cost AS double precision)"
    " WHEN :status = 'completed' THEN estimated_cost_usd WHEN estimated_cost_usd IS NOT NULL THEN 0 END)"
)


def storable_json(value: Any, *, what: str, wrapper_depth: int = 0) -> str:
    """`value` as JSON text for a jsonb column, once the no-image-data guard passed it (`wrapper_depth`: the
    levels this document adds around a client's free JSON, which may itself nest MAX_JSON_DEPTH deep)."""
    assert_storable_json(value, what=what, wrapper_depth=wrapper_depth)
    return json.dumps(value)


def run_request_json(job: ImageJobInput) -> dict[str, Any]:
    """The request as stored on the run (camelCase, in the spec's names)."""
    return {
        "promptSpec": ImagePromptSpec.from_payload(job.spec).model_dump(by_alias=True, exclude_none=True),
        "webhookUrl": job.webhook_url,
        "metadata": job.metadata,
        "priority": job.priority,
    }


@dataclass(frozen=True)
class RecordedRun:
    """What `record_run` found: the run (the new one, or the one already there), whether this call created it,
    and the node's other unfinished jobs (the new job supersedes them)."""

    run: Run
    created: bool
    older_job_ids: list[str]


# The grid of nodes jobs create (a node is about 240 px wide and 300 tall): five to a row.
NEW_NODE_GRID = {"columns": 5, "cell_width": 320, "cell_height": 400}

# The run, its `created` event and the node claim in one statement: one round trip, and atomic without a
# transaction. The CTEs' rows are invisible to the final SELECT's snapshot, so it reads the run either from
# `new_run` (created now) or from `runs` (there already), never both; the event and claim happen only for a new run.
_RECORD_RUN = text(
    "WITH new_run AS ("
    "  INSERT INTO runs (id, kind, canvas_id, node_id, status, provider, model, processor, request, payload,"
    "    workflow_started_at, estimated_cost_usd, trace_parent, content_hash)"
    "  VALUES (:id, 'image_gen', :canvas, :node, 'pending', :provider, :model, :processor,"
    "    CAST(:request AS jsonb), CAST(:payload AS jsonb), CASE WHEN :started THEN now() END, :estimate,"
    "    :trace_parent, :content_hash)"
    "  ON CONFLICT (id) DO NOTHING RETURNING *"
    "), created_event AS ("
    "  INSERT INTO run_events (run_id, kind, payload, dedupe_key)"
    "  SELECT id, :event_kind, CAST(:event AS jsonb), 'created' FROM new_run"
    "  ON CONFLICT (run_id, dedupe_key) DO NOTHING"
    "), slot AS ("
    # A node this job creates takes the canvas' next grid cell. The upsert's row lock hands concurrent new nodes
    # distinct cells; the first one fixes the grid's corner beside the nodes the canvas had then.
    "  INSERT INTO canvas_slots AS slots (canvas_id, next_slot, base_x, base_y)"
    "  SELECT :canvas, 0, COALESCE(max((w.position->>'x')::float8) + :cell_width, 0),"
    "    COALESCE(min((w.position->>'y')::float8), 0)"
    "  FROM new_run r LEFT JOIN workflow_nodes w ON w.canvas_id = :canvas"
    "  WHERE :create_node AND NOT EXISTS (SELECT 1 FROM workflow_nodes WHERE canvas_id = :canvas AND id = :node)"
    "  GROUP BY r.id"
    "  ON CONFLICT (canvas_id) DO UPDATE SET next_slot = slots.next_slot + 1"
    "  RETURNING next_slot, base_x, base_y"
    "), node_claim AS (" + "  INSERT INTO workflow_nodes AS node"
    "    (canvas_id, id, node_type, node_data, position, owner_job_id, owner_since, version)"
    "  SELECT :canvas, :node, 'image_generation',"
    "    CAST(:node_data AS jsonb) || jsonb_build_object('startedAt', r.created_at),"
    "    COALESCE((SELECT jsonb_build_object("
    "      'x', base_x + (next_slot % :columns) * :cell_width, 'y', base_y + (next_slot / :columns) * :cell_height)"
    '      FROM slot), \'{"x": 0, "y": 0}\'),'
    "    r.id, r.created_at, 1 FROM new_run r"
    "  WHERE :create_node OR EXISTS (SELECT 1 FROM workflow_nodes WHERE canvas_id = :canvas AND id = :node)"
    "  ON CONFLICT (canvas_id, id) DO UPDATE SET"
    "    node_data = (node.node_data - CAST(:reset_keys AS text[])) || EXCLUDED.node_data,"
    "    owner_job_id = EXCLUDED.owner_job_id,"
    "    owner_since = EXCLUDED.owner_since, version = node.version + 1, updated_at = now()"
    "  WHERE node.owner_since IS NULL OR (node.owner_since, node.owner_job_id)"
    "    < (EXCLUDED.owner_since, EXCLUDED.owner_job_id)"
    "), older AS ("
    "  SELECT COALESCE(array_agg(id), '{}') AS ids FROM runs"
    f"  WHERE canvas_id = :canvas AND node_id = :node AND id <> :id AND status NOT IN ({TERMINAL_SQL})"
    ")"
    " SELECT found.*, older.ids AS older_job_ids FROM ("
    "   SELECT new_run.*, true AS created FROM new_run"
    "   UNION ALL SELECT runs.*, false FROM runs WHERE id = :id"
    " ) AS found, older"
)


async def record_run(
    session: AsyncSession,
    job: ImageJobInput,
    *,
    effective: dict[str, Any] | None = None,
    workflow_started: bool = False,
) -> RecordedRun:
    """Create the run, its `created` event and the node claim, unless the run already exists (then nothing
    changes: a repeat must not claim its node for a job that may have been made from another request).

    `effective` is what the provider will actually be asked for (e.g. the nearest allowed size).
    `workflow_started` says the caller is the run's workflow: the API records runs before their start.
    """
    parameters = {
        "id": job.job_id,
        "canvas": job.canvas_id,
        "node": job.node_id,
        "provider": job.provider,
        "model": job.model,
        "processor": job.processor,
        "request": storable_json(run_request_json(job), what="request", wrapper_depth=STORED_WRAPPER_DEPTH),
        "payload": storable_json(
            RunResult(effective=effective or {}, warnings=job.warnings, aliased_from=job.aliased_from).to_json(),
            what="run payload",
        ),
        "estimate": job.estimated_cost_usd,
        "trace_parent": job.trace_parent,
        "content_hash": job.content_hash or job.metadata.get("contentHash"),
        "event_kind": str(EventKind.CREATED),
        "event": storable_json({"status": JobStatus.PENDING, "message": f"Queued for {job.processor}"}, what="event"),
        "node_data": storable_json(_claimed_node_data(job), what="node data"),
        "started": workflow_started,
        # A canvas run's job writes only to a node still on the board: the board may have been saved without it
        # since the run began, and the job must not bring it back. A job started by itself makes its node.
        "create_node": CANVAS_RUN_METADATA_KEY not in job.metadata,
        "reset_keys": list(RESET_ON_CLAIM),
        **NEW_NODE_GRID,
    }
    found = (await session.execute(_RECORD_RUN, parameters)).first()
    if found is None:
        # A concurrent insert of the same id committed while this statement waited on it: the conflict left this
        # statement nothing to insert, and its snapshot predates that commit. Asked again, it reads that run.
        found = (await session.execute(_RECORD_RUN, parameters)).one()
    row = dict(found._mapping)
    created, older = bool(row.pop("created")), list(row.pop("older_job_ids"))
    return RecordedRun(run=Run(**row), created=created, older_job_ids=older)


# What a new job's claim clears on its node: its predecessor's outcome (the image stays until a new one comes).
# The claim also stamps `startedAt`, the job's creation, from which the canvas counts the time it has taken.
RESET_ON_CLAIM = ("error", "costUsd", "estimatedCostUsd", "retry")


def _claimed_node_data(job: ImageJobInput) -> dict[str, Any]:
    """The claim's fields; unset ones are absent, never null (the node's data is what a canvas reads)."""
    data = {
        "jobId": job.job_id,
        "status": NodeStatus.PENDING,
        "progress": 0,
        "prompt": job.spec.prompt[:NODE_PROMPT_CHARS],
        "estimatedCostUsd": job.estimated_cost_usd,
    }
    return {key: value for key, value in data.items() if value is not None}


async def add_event(
    session: AsyncSession,
    run_id: str,
    kind: EventKind,
    message: str,
    payload: dict[str, Any] | None = None,
    *,
    dedupe_key: str | None = None,
) -> int | None:
    """Append an event with its human `message`; with a dedupe key a repeat is ignored.

    Returns the new id, or None for a repeat.
    """
    row = await session.execute(
        text(
            "INSERT INTO run_events (run_id, kind, payload, dedupe_key)"
            " VALUES (:run, :kind, CAST(:payload AS jsonb), :dedupe)"
            " ON CONFLICT (run_id, dedupe_key) DO NOTHING RETURNING id"
        ),
        {
            "run": run_id,
            "kind": str(kind),
            "payload": storable_json({**(payload or {}), "message": message}, what="event payload"),
            "dedupe": dedupe_key,
        },
    )
    found = row.first()
    return int(found[0]) if found else None


def describe_stored(images: list[StoredImage]) -> str:
    """'Stored 1024x1024 PNG, 1.2 MB', or a count and total for several images."""
    if not images:
        return "Completed without images"
    total = sum(image.size_bytes for image in images)
    if len(images) > 1:
        return f"Stored {len(images)} images, {_megabytes(total)}"
    image = images[0]
    kind = image.content_type.removeprefix("image/").upper()
    size = f"{image.width}x{image.height} " if image.width and image.height else ""
    return f"Stored {size}{kind}, {_megabytes(total)}"


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.0f} kB"


def transition_message(change: RunTransition, processor: str) -> str:
    if change.status == JobStatus.RUNNING:
        return f"Generating with {processor}"
    if change.status == JobStatus.COMPLETED:
        return describe_stored(change.result.images if change.result else [])
    return change.error or change.status.capitalize()


async def transition(session: AsyncSession, change: RunTransition) -> Transitioned | None:
    """Apply a status change unless the run is already terminal; records one event per status.

    Returns None when nothing changed (a retry, or a run that already ended).
    """
    result = RunResult.of_generation(change.result) if change.result else RunResult()
    if change.timings:
        result.timings = change.timings
    updated = await session.execute(
        text(
            "UPDATE runs SET status = :status, payload = payload || CAST(:payload AS jsonb),"
            " error = COALESCE(:error, error), error_code = COALESCE(:code, error_code),"
            " provider_job_id = COALESCE(:provider_job_id, provider_job_id),"
            f" finished_at = CASE WHEN :status IN ({TERMINAL_SQL}) THEN now() ELSE NULL END,"
            # The provider's own figure; else, completed, the estimate; else (failed, cancelled: not billed) 0.
            f" cost_usd = CASE WHEN :status NOT IN ({TERMINAL_SQL}) THEN cost_usd ELSE {ENDED_COST_SQL} END,"
            " updated_at = now()"
            f" WHERE id = :id AND status NOT IN ({TERMINAL_SQL})"
            "   AND NOT (status = 'running' AND :status = 'running')"
            " RETURNING provider, model, processor, cost_usd, EXTRACT(EPOCH FROM now() - created_at)"
        ),
        {
            "id": change.job_id,
            "status": change.status,
            "payload": storable_json(result.to_json(), what="run payload"),
            "error": change.error,
            "code": change.error_code,
            "cost": change.result.provenance.cost_usd if change.result else None,
            # Synchronous providers that run jobs of their own (Stability's upscaler) name them in the provenance.
            "provider_job_id": change.provider_job_id
            or (change.result.provenance.provider_job_id if change.result else None),
        },
    )
    row = updated.first()
    if row is None:
        return None
    changed = Transitioned(row[0], row[1], row[2], row[3], float(row[4]))
    event: dict[str, Any] = {"status": change.status}
    if change.error:
        event["error"] = {"code": change.error_code, "message": change.error}
    if change.result:
        event["imageUrls"] = result.image_urls
    if change.status == JobStatus.COMPLETED:
        event["progress"] = 100.0
    await add_event(
        session,
        change.job_id,
        EVENT_KIND_BY_STATUS[JobStatus(change.status)],
        transition_message(change, changed.processor),
        event,
        dedupe_key=f"status:{change.status}",
    )
    if change.status in TERMINAL_STATUSES:  # in the same transaction: an end is never told without its event
        await outbound.enqueue(session, job_event(change.status), change.job_id)
    return changed


async def set_provider_job(session: AsyncSession, job_id: str, provider_job_id: str, effective: dict[str, Any]) -> None:
    """Remember the provider's own id (for polling, cancelling and operators)."""
    await session.execute(
        text(
            "UPDATE runs SET provider_job_id = :pid, payload = payload || CAST(:payload AS jsonb), updated_at = now()"
            " WHERE id = :id"
        ),
        {
            "id": job_id,
            "pid": provider_job_id,
            "payload": storable_json(RunResult(effective=effective).to_json(), what="run payload"),
        },
    )


async def record_progress(
    session: AsyncSession, job_id: str, progress: float, *, message: str | None = None, dedupe_key: str | None = None
) -> bool:
    """Store a progress observation (percent, 0-100) on a run that has not ended; returns False when ignored."""
    updated = await session.execute(
        text(
            f"UPDATE runs SET payload = jsonb_set(payload, '{{{PROGRESS_KEY}}}', to_jsonb(CAST(:progress AS float8))),"
            f" updated_at = now() WHERE id = :id AND status NOT IN ({TERMINAL_SQL}) RETURNING id"
        ),
        {"id": job_id, "progress": progress},
    )
    if updated.first() is None:
        return False
    text_ = message or f"{progress:.0f}%"
    recorded = await add_event(
        session, job_id, EventKind.PROGRESS, text_, {"progress": progress}, dedupe_key=dedupe_key
    )
    return recorded is not None


ENDED_NODE_SQL = ", ".join(f"'{status}'" for status in sorted(ENDED_NODE_STATUSES))


def _update_node_sql(*, with_cost: bool) -> TextClause:
    # A job's end shows its cost, by the rule `transition` applies to the run (the node is written first);
    # progress writes skip it.
    cost = (
        f"   || COALESCE((SELECT jsonb_build_object('costUsd', {ENDED_COST_SQL}) FROM runs"
        f"      WHERE id = :job AND {ENDED_COST_SQL} IS NOT NULL), '{{}}')"
    )
    return text(
        "UPDATE workflow_nodes SET node_data = (node_data - CAST(:unset AS text[])) || CAST(:patch AS jsonb)"
        + (cost if with_cost else "")
        + "   || jsonb_build_object('updatedAt', now()),"
        " version = version + 1, updated_at = now()"
        " WHERE canvas_id = :canvas AND id = :node AND owner_job_id = :job"
        "   AND NOT (node_data @> CAST(:patch AS jsonb) AND NOT node_data ?| CAST(:unset AS text[]))"
        f"   AND NOT (node_data->>'jobId' = :job AND node_data->>'status' IN ({ENDED_NODE_SQL}))"
        " RETURNING id"
    )


_UPDATE_NODE = _update_node_sql(with_cost=False)
_UPDATE_ENDED_NODE = _update_node_sql(with_cost=True)

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
RESTORED_KEYS = ("jobId", "status", "progress", "error", "costUsd", "estimatedCostUsd", "retry")


async def update_node(session: AsyncSession, update: NodeUpdate) -> bool:
    """Merge job-owned fields into the node in one statement, only while `update.job_id` owns it and has not
    shown an end there yet; a cancellation restores the node instead (`_RESTORE_NODE`).

    An end is final on the node as on the run: a progress write or a `running` from an activity that outlived
    its job's cancellation never covers the end. A write that would change nothing is skipped, so a retried
    activity does not bump the node's version. Unset fields are absent from the node, never null.
    """
    keys = {"canvas": update.canvas_id, "node": update.node_id, "job": update.job_id}
    if update.status == JobStatus.CANCELLED:
        restored = await session.execute(_RESTORE_NODE, {**keys, "job_keys": list(RESTORED_KEYS)})
        return restored.first() is not None
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
    unset = ["retry", *(["error"] if update.error is None else [])]
    updated = await session.execute(
        _UPDATE_ENDED_NODE if update.status in TERMINAL_STATUSES else _UPDATE_NODE,
        {
            **keys,
            "patch": storable_json(patch, what="node"),
            "unset": unset,
            "status": update.status,
            "cost": update.cost_usd,
        },
    )
    return updated.first() is not None


async def note_retry(session: AsyncSession, update: NodeUpdate, message: str, attempt: int) -> None:
    """A failed attempt that will be tried again, said where people look: a `log` event (`data.moment` `retry`) and
    the node's `retry` note, which the job's next write to the node clears."""
    await add_event(session, update.job_id, EventKind.LOG, message, {"moment": "retry"}, dedupe_key=f"retry-{attempt}")
    await session.execute(
        text(
            "UPDATE workflow_nodes SET node_data = node_data || jsonb_build_object('retry', CAST(:note AS text)),"
            " version = version + 1, updated_at = now()"
            " WHERE canvas_id = :canvas AND id = :node AND owner_job_id = :job"
        ),
        {"note": message, "canvas": update.canvas_id, "node": update.node_id, "job": update.job_id},
    )


async def get_run(session: AsyncSession, job_id: str) -> Run | None:
    return await session.get(Run, job_id)


async def is_finished(session: AsyncSession, job_id: str) -> bool:
    """True when the run has ended, or does not exist."""
    found = await session.execute(select(Run.status).where(Run.id == job_id))
    status = found.scalar_one_or_none()
    return status is None or status in TERMINAL_STATUSES


def encode_cursor(run: Run) -> str:
    raw = f"{run.created_at.isoformat()}|{run.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError for a cursor this API did not make."""
    padded = cursor + "=" * (-len(cursor) % 4)
    created, _, job_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
    if not job_id:
        raise ValueError("malformed cursor")
    return datetime.fromisoformat(created), job_id


async def list_runs(
    session: AsyncSession,
    *,
    status: str | None = None,
    provider: str | None = None,
    canvas_id: str | None = None,
    node_id: str | None = None,
    text_in_prompt: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Run], str | None]:
    """Runs newest first, filtered (`text_in_prompt`: a case-insensitive substring of the prompt, taken
    literally); keyset pagination over (created_at, id)."""
    query = select(Run).order_by(col(Run.created_at).desc(), col(Run.id).desc()).limit(limit + 1)
    if status:
        query = query.where(Run.status == status)
    if provider:
        query = query.where(Run.provider == provider)
    if canvas_id:
        query = query.where(Run.canvas_id == canvas_id)
    if node_id:
        query = query.where(Run.node_id == node_id)
    if text_in_prompt:
        literal = text_in_prompt.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        prompt = col(Run.request)["promptSpec"]["basePrompt"].astext
        query = query.where(prompt.ilike(f"%{literal}%", escape="\\"))
    if cursor:
        created, job_id = decode_cursor(cursor)
        query = query.where(
            (col(Run.created_at) < created) | ((col(Run.created_at) == created) & (col(Run.id) < job_id))
        )
    runs = list((await session.execute(query)).scalars())
    next_cursor = encode_cursor(runs[limit - 1]) if len(runs) > limit else None
    return runs[:limit], next_cursor


async def list_events(session: AsyncSession, job_id: str, *, after_id: int = 0) -> list[RunEvent]:
    query = select(RunEvent).where(RunEvent.run_id == job_id, col(RunEvent.id) > after_id).order_by(col(RunEvent.id))
    return list((await session.execute(query)).scalars())


async def list_canvas_events(session: AsyncSession, canvas_id: str, *, after_id: int = 0) -> list[RunEvent]:
    """Events of every job of a canvas, in commit order of their ids."""
    query = (
        select(RunEvent)
        .join(Run, col(Run.id) == col(RunEvent.run_id))
        .where(Run.canvas_id == canvas_id, col(RunEvent.id) > after_id)
        .order_by(col(RunEvent.id))
    )
    return list((await session.execute(query)).scalars())


async def last_canvas_event_id(session: AsyncSession, canvas_id: str) -> int:
    found = await session.execute(
        text("SELECT COALESCE(max(e.id), 0) FROM run_events e JOIN runs r ON r.id = e.run_id WHERE r.canvas_id = :c"),
        {"c": canvas_id},
    )
    return int(found.scalar_one())


async def list_nodes(session: AsyncSession, canvas_id: str) -> list[WorkflowNode]:
    # Nodes saved in one transaction share created_at; their ids keep the order stable.
    query = (
        select(WorkflowNode)
        .where(WorkflowNode.canvas_id == canvas_id)
        .order_by(col(WorkflowNode.created_at), col(WorkflowNode.id))
    )
    return list((await session.execute(query)).scalars())


async def unstarted_runs(session: AsyncSession, *, older_than_seconds: float, limit: int) -> list[Run]:
    """Pending runs recorded over `older_than_seconds` ago whose workflow start was never confirmed: the API that
    committed each may have crashed before starting it, or Temporal was down."""
    query = (
        select(Run)
        .where(col(Run.workflow_started_at).is_(None))
        .where(Run.status == JobStatus.PENDING)
        .where(col(Run.created_at) < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds))
        .order_by(col(Run.created_at))
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def mark_workflows_started(session: AsyncSession, job_ids: list[str]) -> None:
    """Confirm that these runs' workflows exist (started now, or found running)."""
    await session.execute(
        text("UPDATE runs SET workflow_started_at = now() WHERE id = ANY(:ids) AND workflow_started_at IS NULL"),
        {"ids": job_ids},
    )


# What jobs and canvas runs write into a node's data; a save of the board never changes these.


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


async def count_rate_limited(session: AsyncSession, job_id: str) -> None:
    await session.execute(text("UPDATE runs SET rate_limited = rate_limited + 1 WHERE id = :id"), {"id": job_id})


@dataclass(frozen=True)
class ProviderStats:
    """One provider and model's jobs over a window: outcomes, time to finish, cost, 429s and polling timeouts."""

    provider: str
    model: str
    completed: int
    failed: int
    cancelled: int
    p50_seconds: float | None
    p95_seconds: float | None
    cost_usd: float | None
    rate_limited: int
    poll_timeouts: int


_PROVIDER_STATS = (
    "SELECT provider, model,"
    " count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),"
    " count(*) FILTER (WHERE status = 'cancelled'),"
    " percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at))"
    "   FILTER (WHERE status = 'completed'),"
    " percentile_cont(0.95) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM finished_at - created_at))"
    "   FILTER (WHERE status = 'completed'),"
    " sum(cost_usd), sum(rate_limited), count(*) FILTER (WHERE error_code = :timeout)"
    " FROM runs WHERE created_at >= :since{canvas} GROUP BY provider, model ORDER BY provider, model"
)


async def provider_stats(
    session: AsyncSession, *, since: datetime, canvas_id: str | None = None
) -> list[ProviderStats]:
    """Per provider and model, the jobs created since `since` (one scan of `ix_runs_created`'s range)."""
    query = _PROVIDER_STATS.format(canvas=" AND canvas_id = :canvas" if canvas_id else "")
    parameters = {"since": since, "canvas": canvas_id, "timeout": PROVIDER_TIMEOUT}
    rows = await session.execute(text(query), parameters)
    return [
        ProviderStats(
            provider=row[0],
            model=row[1],
            completed=row[2],
            failed=row[3],
            cancelled=row[4],
            p50_seconds=_rounded(row[5]),
            p95_seconds=_rounded(row[6]),
            cost_usd=_rounded(row[7], 6),
            rate_limited=int(row[8] or 0),
            poll_timeouts=row[9],
        )
        for row in rows
    ]


def _rounded(value: Any, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


async def count_by_status(session: AsyncSession, *, canvas_id: str | None = None) -> dict[str, int]:
    query = select(Run.status, func.count()).group_by(Run.status)
    if canvas_id:
        query = query.where(Run.canvas_id == canvas_id)
    return {status: int(count) for status, count in (await session.execute(query)).all()}
