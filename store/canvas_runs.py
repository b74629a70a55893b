"""Every SQL statement about canvas runs: the run and its nodes' states, the board's view of them, and the cache.

A node's state change is one statement on its row (idempotent: a retried step changes nothing twice), and the
same state goes into the node's data on the board (`runId`, `runState`, `runReason`), so the board shows it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from temporalio.converter import value_to_type

from models.guards import STORED_WRAPPER_DEPTH, assert_storable_json
from models.payloads import CachedImage, CanvasRunInput, NodeRunUpdate, RunNodePlan
from models.tables import CanvasRun, CanvasRunNode, Run
from models.vocabulary import FINISHED_NODE_STATES, JobStatus, NodeRunState, Priority, canvas_run_event
from store import outbound
from store.canvases import lock_board
from store.runs import forget_workflow_checks_sql, workflow_check_sql

RECENT_RUNS = 3
FINISHED_SQL = ", ".join(f"'{state}'" for state in sorted(FINISHED_NODE_STATES))


async def active_canvas_run(session: AsyncSession, *, canvas_id: str) -> str | None:
    """The board's run that has not ended, if any (a board runs one at a time)."""
    found = await session.execute(
        text(
            "SELECT id FROM canvas_runs WHERE canvas_id = :canvas AND finished_at IS NULL ORDER BY created_at LIMIT 1"
        ),
        {"canvas": canvas_id},
    )
    return found.scalar_one_or_none()


async def create_canvas_run(session: AsyncSession, *, plan: CanvasRunInput) -> str | None:
    """The run, a pending row per node in run order with its plan, and `pending` on the board's nodes; the run's
    workflow is started after the commit (handoff/sweep.py). Returns None, or the board's active run instead of
    creating anything: the board's lock (taken by saves too) makes the check and the insert one step."""
    await lock_board(session, canvas_id=plan.canvas_id)
    active = await active_canvas_run(session, canvas_id=plan.canvas_id)
    if active is not None:
        return active
    session.add(CanvasRun(id=plan.run_id, canvas_id=plan.canvas_id, priority=plan.priority, forced=plan.force))
    await session.flush()
    for order, node in enumerate(plan.nodes):
        stored_plan = dataclasses.asdict(node)
        assert_storable_json(stored_plan, what=f"node {node.node_id}'s plan", wrapper_depth=STORED_WRAPPER_DEPTH)
        session.add(
            CanvasRunNode(
                canvas_run_id=plan.run_id,
                node_id=node.node_id,
                canvas_id=plan.canvas_id,
                order=order,
                upstream=node.upstream,
                content_hash=node.content_hash,
                job_id=node.job.job_id,
                plan=stored_plan,
            )
        )
    await session.flush()
    nodes = [node.node_id for node in plan.nodes]
    await _forget_earlier_canvas_runs(session, plan.canvas_id, nodes)
    await _show_on_board(session, plan.canvas_id, nodes, plan.run_id, NodeRunState.PENDING, None)
    return None


async def _forget_earlier_canvas_runs(session: AsyncSession, canvas_id: str, in_run: list[str]) -> None:
    """The board shows the newest run only: the nodes it leaves out drop what an earlier run said of them."""
    await session.execute(
        text(
            "UPDATE workflow_nodes SET node_data = node_data - CAST(:keys AS text[]), version = version + 1,"
            " updated_at = now() WHERE canvas_id = :canvas AND id <> ALL(:nodes) AND node_data ? 'runId'"
        ),
        {"canvas": canvas_id, "nodes": in_run, "keys": ["runId", "runState", "runReason"]},
    )


async def unstarted_canvas_runs(
    session: AsyncSession, *, older_than_seconds: float, limit: int, max_parallel: int
) -> list[CanvasRunInput]:
    """The plans of runs recorded over `older_than_seconds` ago whose workflow start was never confirmed."""
    found = await session.execute(
        select(CanvasRun)
        .where(col(CanvasRun.workflow_started_at).is_(None), col(CanvasRun.finished_at).is_(None))
        .where(col(CanvasRun.created_at) < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_seconds))
        .order_by(col(CanvasRun.created_at))
        .limit(limit)
    )
    return [await _stored_plan(session, run, max_parallel) for run in found.scalars()]


async def unstarted_plan(session: AsyncSession, *, run_id: str, max_parallel: int) -> CanvasRunInput | None:
    """The run's plan while its workflow start is still to be made (None once it is, or once the run ended)."""
    run = await session.get(CanvasRun, run_id)
    if run is None or run.workflow_started_at is not None or run.finished_at is not None:
        return None
    return await _stored_plan(session, run, max_parallel)


async def _stored_plan(session: AsyncSession, run: CanvasRun, max_parallel: int) -> CanvasRunInput:
    nodes = await session.execute(
        select(CanvasRunNode.plan).where(CanvasRunNode.canvas_run_id == run.id).order_by(col(CanvasRunNode.order))
    )
    return CanvasRunInput(
        run_id=run.id,
        canvas_id=run.canvas_id,
        nodes=[value_to_type(RunNodePlan, plan) for plan in nodes.scalars()],
        force=run.forced,
        max_parallel=max_parallel,
        priority=Priority(run.priority),
    )


async def mark_started(session: AsyncSession, *, run_id: str) -> None:
    """Confirm that the run's workflow exists (started now, or found there)."""
    await session.execute(
        text("UPDATE canvas_runs SET workflow_started_at = now() WHERE id = :id AND workflow_started_at IS NULL"),
        {"id": run_id},
    )


async def fail_unstartable(session: AsyncSession, *, plan: CanvasRunInput, reason: str) -> None:
    """A run Temporal refuses for good ends failed, with every node that has no outcome yet, so nobody waits."""
    await end_canvas_run(session, run_id=plan.run_id, canvas_id=plan.canvas_id, status=JobStatus.FAILED, reason=reason)


async def end_canvas_run(
    session: AsyncSession, *, run_id: str, canvas_id: str, status: JobStatus, reason: str | None = None
) -> bool:
    """End a run from outside its workflow, unless it has ended: every node without an outcome yet gets `status`
    (failed or cancelled) with `reason`, and the run ends with it. False when the run had ended already."""
    still = text("SELECT id FROM canvas_runs WHERE id = :run AND finished_at IS NULL FOR UPDATE")
    if (await session.execute(still, {"run": run_id})).first() is None:
        return False
    unfinished = await session.execute(
        text(f"SELECT node_id FROM canvas_run_nodes WHERE canvas_run_id = :run AND state NOT IN ({FINISHED_SQL})"),
        {"run": run_id},
    )
    for node_id in unfinished.scalars():
        update = NodeRunUpdate(run_id, canvas_id, node_id, NodeRunState(status), reason=reason)
        await set_node_state(session, update=update, only_unfinished=True)
    await finish_canvas_run(session, run_id=run_id, status=status)
    return True


# The condition is the partial index's (ix_canvas_runs_unfinished_check), word for word.
_DUE_FOR_CHECK = workflow_check_sql(
    "canvas_runs", "finished_at IS NULL AND workflow_started_at IS NOT NULL", "id, canvas_id"
)


async def due_for_workflow_check(session: AsyncSession, *, every_seconds: float, limit: int) -> list[tuple[str, str]]:
    """`runs.due_for_workflow_check` for canvas runs: (run id, canvas id) of the unfinished runs due."""
    found = await session.execute(_DUE_FOR_CHECK, {"every": every_seconds, "limit": limit})
    return [(run_id, canvas_id) for run_id, canvas_id in found.all()]


async def forget_workflow_checks(session: AsyncSession, *, run_ids: list[str]) -> None:
    """`runs.forget_workflow_checks` for canvas runs."""
    await session.execute(_FORGET_CHECKS, {"ids": run_ids})


_FORGET_CHECKS = forget_workflow_checks_sql("canvas_runs")


async def _show_on_board(
    session: AsyncSession, canvas_id: str, node_ids: list[str], run_id: str, state: str, reason: str | None
) -> None:
    """The run's state of these nodes in their data on the board (`runId`, `runState`, and `runReason` when there
    is one: an unset field is absent, never null)."""
    patch = {"runId": run_id, "runState": state} | ({"runReason": reason} if reason else {})
    await session.execute(
        text(
            "UPDATE workflow_nodes SET node_data = (node_data - 'runReason') || CAST(:patch AS jsonb),"
            " version = version + 1, updated_at = now() WHERE canvas_id = :canvas AND id = ANY(:nodes)"
        ),
        {"canvas": canvas_id, "nodes": node_ids, "patch": json.dumps(patch)},
    )


async def cached_images(session: AsyncSession, *, shown: Mapping[str, tuple[str, str]]) -> dict[str, CachedImage]:
    """For each node (id -> (the job it shows now, its inputs' hash now)): that job's image, when it completed from
    these same inputs, whether Generate, the API or a canvas run started it."""
    if not shown:
        return {}
    found = await session.execute(
        text(
            "SELECT id, payload->>'imageUrl', content_hash FROM runs"
            " WHERE id = ANY(:jobs) AND status = 'completed' AND payload->>'imageUrl' IS NOT NULL"
        ),
        {"jobs": [job_id for job_id, _ in shown.values()]},
    )
    made = {job_id: (image_url, digest) for job_id, image_url, digest in found.all()}
    cached = {}
    for node_id, (job_id, digest) in shown.items():
        image_url, made_from = made.get(job_id, (None, None))
        if image_url is not None and made_from == digest:
            cached[node_id] = CachedImage(job_id=job_id, image_url=image_url)
    return cached


async def image_hashes(session: AsyncSession, *, canvas_id: str, image_urls: Iterable[str]) -> dict[str, str]:
    """For the canvas' images among `image_urls` that its completed jobs made: image URL -> that job's inputs'
    hash (planning/canvas_plan.input_key)."""
    urls = list(set(image_urls))
    if not urls:
        return {}
    found = await session.execute(
        text(
            "SELECT url, runs.content_hash FROM runs,"
            " jsonb_array_elements_text(COALESCE(payload->'imageUrls', jsonb_build_array(payload->'imageUrl'))) AS url"
            " WHERE runs.canvas_id = :canvas AND runs.status = 'completed' AND runs.content_hash IS NOT NULL"
            " AND url = ANY(:urls)"
        ),
        {"canvas": canvas_id, "urls": urls},
    )
    return {str(url): str(digest) for url, digest in found.all()}


async def set_node_state(session: AsyncSession, *, update: NodeRunUpdate, only_unfinished: bool = False) -> None:
    """The node's new state on its run row and on the board; a repeat of the same state writes nothing, and with
    `only_unfinished` neither does a node that already has its outcome."""
    finished = NodeRunState(update.state) in FINISHED_NODE_STATES
    unfinished_only = f" AND state NOT IN ({FINISHED_SQL})" if only_unfinished else ""
    changed = await session.execute(
        text(
            "UPDATE canvas_run_nodes SET state = :state, job_id = COALESCE(:job, job_id),"
            " image_url = COALESCE(:image, image_url), reason = :reason, version = version + 1,"
            " started_at = CASE WHEN :state = 'running' THEN COALESCE(started_at, now()) ELSE started_at END,"
            " finished_at = CASE WHEN :finished THEN COALESCE(finished_at, now()) ELSE finished_at END"
            " WHERE canvas_run_id = :run AND node_id = :node AND state IS DISTINCT FROM :state"
            + unfinished_only
            + " RETURNING node_id"
        ),
        {
            "run": update.run_id,
            "node": update.node_id,
            "state": update.state,
            "job": update.job_id,
            "image": update.image_url,
            "reason": update.reason,
            "finished": finished,
        },
    )
    if changed.first() is None:
        return
    await _show_on_board(session, update.canvas_id, [update.node_id], update.run_id, update.state, update.reason)


# The run's end and the outbound deliveries it owes, in one statement (atomic without a transaction).
_FINISH_CANVAS_RUN = text(
    "WITH finished AS ("
    "  UPDATE canvas_runs SET status = :status, finished_at = COALESCE(finished_at, now()),"
    "    workflow_started_at = COALESCE(workflow_started_at, now())"
    "  WHERE id = :id AND status IS DISTINCT FROM :status RETURNING id, tenant_id"
    f"), owed AS ({outbound.enqueue_sql('finished')})"
    " SELECT count(*) FROM owed"
)


async def finish_canvas_run(session: AsyncSession, *, run_id: str, status: str) -> None:
    """The run's end (a run that ends has had its workflow, or never will: nothing is left to start), and its
    outbound event with it."""
    await session.execute(
        _FINISH_CANVAS_RUN, {"id": run_id, "status": status, "outbound_event": str(canvas_run_event(status))}
    )


CanvasRunRows = tuple[CanvasRun, list[tuple[CanvasRunNode, Run | None]]]


async def read_canvas_run(session: AsyncSession, *, canvas_id: str, run_id: str) -> CanvasRunRows | None:
    """The run, and its nodes in run order each with its job's record (None before the job exists)."""
    found = await read_canvas_run_by_id(session, run_id=run_id)
    return found if found is not None and found[0].canvas_id == canvas_id else None


async def read_canvas_run_by_id(session: AsyncSession, *, run_id: str) -> CanvasRunRows | None:
    """`read_canvas_run` without the canvas (for those who know only the run's id)."""
    run = await session.get(CanvasRun, run_id)
    if run is None:
        return None
    found = await session.execute(
        select(CanvasRunNode, Run)
        .outerjoin(Run, col(Run.id) == col(CanvasRunNode.job_id))
        .where(CanvasRunNode.canvas_run_id == run_id)
        .order_by(col(CanvasRunNode.order))
    )
    return run, [(node, job) for node, job in found.all()]


async def recent_canvas_run_versions(session: AsyncSession, *, canvas_id: str) -> dict[str, str]:
    """The canvas' newest runs, each with a fingerprint that moves whenever the run or one of its nodes changes."""
    found = await session.execute(
        text(
            "SELECT r.id, r.status || ':' || sum(n.version) FROM canvas_runs r"
            " JOIN canvas_run_nodes n ON n.canvas_run_id = r.id"
            " WHERE r.id IN (SELECT id FROM canvas_runs WHERE canvas_id = :canvas ORDER BY created_at DESC LIMIT :n)"
            " GROUP BY r.id, r.status"
        ),
        {"canvas": canvas_id, "n": RECENT_RUNS},
    )
    return {str(run_id): str(fingerprint) for run_id, fingerprint in found.all()}
