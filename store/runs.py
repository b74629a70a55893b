"""`runs`: one row per job. Recording a job (with its node claim and first event, in one statement), its status
changes, provider job, progress and cost; reads, pagination, and the runs the handoff has yet to start.

Writes are idempotent so that Temporal may retry any activity: runs are inserted once, each status change is
one event with a dedupe key, and terminal statuses are final.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import TextClause, func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.guards import STORED_WRAPPER_DEPTH
from models.payloads import ImageJobInput, RunTransition
from models.results import PROGRESS_KEY, RunResult, Transitioned
from models.schemas import ImagePromptSpec
from models.tables import Run
from models.vocabulary import (
    EVENT_KIND_BY_STATUS,
    TERMINAL_STATUSES,
    EventKind,
    JobStatus,
    NodeStatus,
    job_event,
)
from store import outbound, tenants
from store.jsonb import storable_json
from store.run_events import describe_stored

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
# Recorded by its workflow (`:started`), a run the API recorded first has its start confirmed too: an API killed
# between its start and its confirmation leaves that to the sweep, which sees only runs still pending.
_RECORD_RUN = text(
    "WITH confirmed AS ("
    "  UPDATE runs SET workflow_started_at = now() WHERE id = :id AND :started AND workflow_started_at IS NULL"
    "), new_run AS ("
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
    *,
    job: ImageJobInput,
    effective: dict[str, Any] | None = None,
    workflow_started: bool = False,
) -> RecordedRun:
    """Create the run, its `created` event and the node claim, unless the run already exists (then nothing
    changes: a repeat must not claim its node for a job that may have been made from another request).

    `effective` is what the provider will actually be asked for (e.g. the nearest allowed size).
    `workflow_started` says the caller is the run's workflow: the API records runs before their start, and the
    workflow's own record confirms that start if the API did not live to.
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
RESET_ON_CLAIM = ("error", "costUsd", "estimatedCostUsd", "retry", "waitingForSlot")


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


def transition_message(change: RunTransition) -> str | None:
    """The event's words for a status change; None for `running`, whose words name the run's processor and are
    made in the statement that reads it (`transition_sql`)."""
    if change.status == JobStatus.RUNNING:
        return None
    if change.status == JobStatus.COMPLETED:
        return describe_stored(change.result.images if change.result else [])
    return change.error or change.status.capitalize()


def transition_sql(*, guard: str = "", then: str = "") -> TextClause:
    """A status change, its event and, for an end, its outbound deliveries and the next job in the tenant's line for
    the running slot it frees, in one statement: one round trip, and atomic without a transaction. `guard` adds
    conditions the run must meet to move; `then` adds CTEs after `moved` (the changed run's row), for writes that
    go with the change. Answers one row when the run moved."""
    return text(
        "WITH moved AS ("
        "  UPDATE runs SET status = :status, payload = payload || CAST(:payload AS jsonb),"
        "    error = COALESCE(:error, error), error_code = COALESCE(:code, error_code),"
        "    provider_job_id = COALESCE(:provider_job_id, provider_job_id),"
        f"    finished_at = CASE WHEN :status IN ({TERMINAL_SQL}) THEN now() ELSE NULL END,"
        # The provider's own figure; else, completed, the estimate; else (failed, cancelled: not billed) 0.
        f"    cost_usd = CASE WHEN :status NOT IN ({TERMINAL_SQL}) THEN cost_usd ELSE {ENDED_COST_SQL} END,"
        "    updated_at = now()"
        f"  WHERE id = :id AND status NOT IN ({TERMINAL_SQL})"
        f"    AND NOT (status = 'running' AND :status = 'running'){guard}"
        "  RETURNING id, provider, model, processor, cost_usd, EXTRACT(EPOCH FROM now() - created_at) AS age,"
        "    tenant_id"
        "), told AS ("
        "  INSERT INTO run_events (run_id, kind, payload, dedupe_key)"
        "  SELECT id, :event_kind, CAST(:event AS jsonb)"
        "    || jsonb_build_object('message', COALESCE(:message, 'Generating with ' || processor)), :dedupe"
        "  FROM moved ON CONFLICT (run_id, dedupe_key) DO NOTHING"
        # In the same statement: an end is never told without its deliveries, nor they without it.
        f"), owed AS ({outbound.enqueue_sql('moved')}){then}"
        " SELECT provider, model, processor, cost_usd, age, ARRAY(SELECT id FROM owed),"
        # An end frees a running slot of its tenant: the oldest job in the tenant's line for one, for the caller to
        # wake (store/tenants.join_slot_line). Tenants without a cap have nobody in line.
        f" CASE WHEN :status IN ({TERMINAL_SQL}) THEN {tenants.first_in_line_sql('moved')} END FROM moved"
    )


_TRANSITION = transition_sql()


def transition_parameters(change: RunTransition) -> dict[str, Any]:
    """The parameters of a `transition_sql` statement for `change`."""
    result = RunResult.of_generation(change.result) if change.result else RunResult()
    if change.timings:
        result.timings = change.timings
    event: dict[str, Any] = {"status": change.status}
    if change.error:
        event["error"] = {"code": change.error_code, "message": change.error}
    if change.result:
        event["imageUrls"] = result.image_urls
    if change.status == JobStatus.COMPLETED:
        event["progress"] = 100.0
    return {
        "id": change.job_id,
        "status": change.status,
        "payload": storable_json(result.to_json(), what="run payload"),
        "error": change.error,
        "code": change.error_code,
        "cost": change.result.provenance.cost_usd if change.result else None,
        # Synchronous providers that run jobs of their own (Stability's upscaler) name them in the provenance.
        "provider_job_id": change.provider_job_id
        or (change.result.provenance.provider_job_id if change.result else None),
        "event_kind": str(EVENT_KIND_BY_STATUS[JobStatus(change.status)]),
        "event": storable_json(event, what="event payload"),
        "message": transition_message(change),
        "dedupe": f"status:{change.status}",
        "outbound_event": str(job_event(change.status)) if change.status in TERMINAL_STATUSES else None,
    }


def transitioned(row: Sequence[Any] | None) -> Transitioned | None:
    """What a `transition_sql` statement answered: the change it made, or None when the run did not move."""
    if row is None:
        return None
    return Transitioned(row[0], row[1], row[2], row[3], float(row[4]), tuple(row[5]), row[6])


async def transition(session: AsyncSession, *, change: RunTransition) -> Transitioned | None:
    """Apply a status change unless the run is already terminal; records one event per status, and for an end the
    outbound deliveries it owes, in one statement. For an end, the answer also names the next job in the tenant's
    line for a running slot, if any.

    Returns None when nothing changed (a retry, or a run that already ended).
    """
    return transitioned((await session.execute(_TRANSITION, transition_parameters(change))).first())


async def set_provider_job(
    session: AsyncSession, *, job_id: str, provider_job_id: str, effective: dict[str, Any]
) -> None:
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


async def submitted_provider_job(session: AsyncSession, *, job_id: str) -> tuple[str, str] | None:
    """(provider, the provider's job id) of an unfinished run that has submitted its provider job; else None."""
    found = await session.execute(
        text(
            "SELECT provider, provider_job_id FROM runs"
            f" WHERE id = :id AND provider_job_id IS NOT NULL AND status NOT IN ({TERMINAL_SQL})"
        ),
        {"id": job_id},
    )
    row = found.first()
    return (row[0], row[1]) if row else None


def progress_sql(*, then: str = "") -> TextClause:
    """A progress observation (percent, 0-100) on a run that has not ended, and its event, in one statement.
    `then` adds CTEs after `told` (the new event's row; none for a repeat of its dedupe key). Answers whether the
    event is new."""
    return text(
        "WITH observed AS ("
        f"  UPDATE runs SET payload = jsonb_set(payload, '{{{PROGRESS_KEY}}}', to_jsonb(CAST(:progress AS float8))),"
        f"    updated_at = now() WHERE id = :job AND status NOT IN ({TERMINAL_SQL}) RETURNING id"
        "), told AS ("
        "  INSERT INTO run_events (run_id, kind, payload, dedupe_key)"
        "  SELECT id, :event_kind, CAST(:event AS jsonb), :dedupe FROM observed"
        "  ON CONFLICT (run_id, dedupe_key) DO NOTHING RETURNING id"
        f"){then} SELECT EXISTS (SELECT 1 FROM told)"
    )


def progress_parameters(*, job_id: str, progress: float, message: str | None, dedupe_key: str | None) -> dict[str, Any]:
    """The parameters of a `progress_sql` statement; the event says `message`, or the percent."""
    event = {"progress": progress, "message": message or f"{progress:.0f}%"}
    return {
        "job": job_id,
        "progress": progress,
        "event_kind": str(EventKind.PROGRESS),
        "event": storable_json(event, what="event payload"),
        "dedupe": dedupe_key,
    }


async def get_run(session: AsyncSession, *, job_id: str) -> Run | None:
    return await session.get(Run, job_id)


async def is_finished(session: AsyncSession, *, job_id: str) -> bool:
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
    tenant_id: str,
    status: str | None = None,
    provider: str | None = None,
    canvas_id: str | None = None,
    node_id: str | None = None,
    text_in_prompt: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> tuple[list[Run], str | None]:
    """The tenant's runs newest first, filtered (`text_in_prompt`: a case-insensitive substring of the prompt,
    taken literally); keyset pagination over (created_at, id)."""
    query = (
        select(Run)
        .where(col(Run.tenant_id) == tenant_id)
        .order_by(col(Run.created_at).desc(), col(Run.id).desc())
        .limit(limit + 1)
    )
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


def workflow_check_sql(table: str, unfinished: str, returning: str) -> TextClause:
    """Take the rows of `table` that are `unfinished` (an SQL condition) and due to have their workflows asked about
    (:every seconds after the last question, or after the start), at most :limit, oldest question first, and stamp
    them asked now. SKIP LOCKED: two workers' sweeps never take the same row."""
    checked = "COALESCE(workflow_checked_at, workflow_started_at)"
    return text(
        f"UPDATE {table} SET workflow_checked_at = now() WHERE id IN ("
        f"  SELECT id FROM {table} WHERE {unfinished} AND {checked} < now() - make_interval(secs => :every)"
        f"  ORDER BY {checked} LIMIT :limit FOR UPDATE SKIP LOCKED)"
        f" RETURNING {returning}"
    )


def forget_workflow_checks_sql(table: str) -> TextClause:
    """Make the rows :ids of `table` due for the next check again (`workflow_check_sql` stamped them, and the
    questions could not be asked)."""
    return text(f"UPDATE {table} SET workflow_checked_at = NULL WHERE id = ANY(:ids)")


# The condition is the partial index's (ix_runs_unfinished_check), word for word.
_DUE_FOR_CHECK = workflow_check_sql(
    "runs", "status IN ('pending', 'running') AND workflow_started_at IS NOT NULL", "id, canvas_id, node_id"
)


@dataclass(frozen=True)
class UnfinishedRun:
    """A run not yet ended, as the check of its workflow needs it."""

    job_id: str
    canvas_id: str
    node_id: str


async def due_for_workflow_check(session: AsyncSession, *, every_seconds: float, limit: int) -> list[UnfinishedRun]:
    """Take up to `limit` unfinished runs whose workflows were last asked about (or started) over `every_seconds`
    ago, and stamp them asked now: the caller asks Temporal whether each workflow is still there."""
    found = await session.execute(_DUE_FOR_CHECK, {"every": every_seconds, "limit": limit})
    return [UnfinishedRun(*row) for row in found.all()]


async def forget_workflow_checks(session: AsyncSession, *, job_ids: list[str]) -> None:
    """`due_for_workflow_check` took these runs, and Temporal could not be asked about them: due again at once."""
    await session.execute(_FORGET_CHECKS, {"ids": job_ids})


_FORGET_CHECKS = forget_workflow_checks_sql("runs")


async def mark_workflows_started(session: AsyncSession, *, job_ids: list[str]) -> None:
    """Confirm that these runs' workflows exist (started now, or found running)."""
    await session.execute(
        text("UPDATE runs SET workflow_started_at = now() WHERE id = ANY(:ids) AND workflow_started_at IS NULL"),
        {"ids": job_ids},
    )


async def count_rate_limited(session: AsyncSession, *, job_id: str) -> None:
    await session.execute(text("UPDATE runs SET rate_limited = rate_limited + 1 WHERE id = :id"), {"id": job_id})
