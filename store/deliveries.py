"""Who owns which provider job, which webhook deliveries were taken (and still need their signal) and which were
refused; used by the webhook route, the handoff and the provider activities.

A submit records the provider's job id the moment the provider answers. The webhook route takes a delivery
only for the job that owns the provider job it reports on, and a job cancels at the provider only provider jobs
no other job owns. A taken delivery waits in `pending_signals` until its workflow has it (handoff/sweep.py).
Refused deliveries are kept for operators (`GET /v1/webhooks/refusals`) for REFUSALS_KEPT_DAYS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.tables import Run, WebhookRefusal
from models.tenancy import DEFAULT_TENANT
from store.runs import TERMINAL_SQL

REFUSALS_KEPT_DAYS = 7
REASON_CHARS = 500


@dataclass(frozen=True)
class WebhookTarget:
    """What the webhook route learned about the job a delivery names, and whether it took the delivery."""

    status: str
    provider: str
    # The job that owns the provider job the delivery reports on (None: nobody recorded it yet).
    owner: str | None
    # Whether a delivery with the same dedupe key was already taken.
    seen: bool
    # The pending signal queued for the workflow, when the delivery was taken.
    signal_id: int | None


@dataclass(frozen=True)
class Delivery:
    """An authentic delivery to take: the job it names and what to record of it."""

    job_id: str
    provider: str
    provider_job_id: str | None
    dedupe_key: str | None
    # The timeline entry (a `webhook` run event) and the event for the workflow (a pending signal), as JSON.
    timeline: str
    event: str


async def record_provider_job(
    session: AsyncSession, *, provider: str, provider_job_id: str, job_id: str, attempt: int
) -> None:
    """Record that `job_id` created `provider_job_id` (a record already there, from a repeat, stays)."""
    await session.execute(
        text(
            "INSERT INTO provider_jobs (provider, provider_job_id, job_id, submit_attempt)"
            " VALUES (:provider, :pid, :job, :attempt) ON CONFLICT DO NOTHING"
        ),
        {"provider": provider, "pid": provider_job_id, "job": job_id, "attempt": attempt},
    )


async def provider_job_owner(session: AsyncSession, *, provider: str, provider_job_id: str) -> str | None:
    found = await session.execute(
        text("SELECT job_id FROM provider_jobs WHERE provider = :provider AND provider_job_id = :pid"),
        {"provider": provider, "pid": provider_job_id},
    )
    return found.scalar_one_or_none()


# The job a delivery names, looked up and, when the delivery is this job's to take and new, recorded: its timeline
# event and its pending signal. One statement, atomic by itself; a concurrent repeat of the same delivery loses
# on the event's dedupe key and queues nothing.
_TAKE_DELIVERY = text(
    "WITH target AS ("
    "  SELECT r.id, r.status, r.provider,"
    "    (SELECT p.job_id FROM provider_jobs p WHERE p.provider = :provider AND p.provider_job_id = :pid) AS owner,"
    "    EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = r.id AND e.dedupe_key = :dedupe) AS seen"
    "  FROM runs r WHERE r.id = :run"
    "), taken AS ("
    "  INSERT INTO run_events (run_id, kind, payload, dedupe_key)"
    "  SELECT id, 'webhook', CAST(:timeline AS jsonb), :dedupe FROM target"
    "  WHERE provider = :provider AND (owner IS NULL OR owner = id) AND NOT seen"
    f"    AND status NOT IN ({TERMINAL_SQL})"
    "  ON CONFLICT (run_id, dedupe_key) DO NOTHING RETURNING run_id"
    "), queued AS ("
    "  INSERT INTO pending_signals (run_id, event) SELECT run_id, CAST(:event AS jsonb) FROM taken RETURNING id"
    ")"
    " SELECT status, provider, owner, seen, (SELECT id FROM queued) AS signal_id FROM target"
)


async def take_delivery(session: AsyncSession, *, delivery: Delivery) -> WebhookTarget | None:
    """The named job's target facts, having recorded the delivery if it is the job's and new; None: no such job."""
    found = await session.execute(
        _TAKE_DELIVERY,
        {
            "run": delivery.job_id,
            "provider": delivery.provider,
            "pid": delivery.provider_job_id,
            "dedupe": delivery.dedupe_key,
            "timeline": delivery.timeline,
            "event": delivery.event,
        },
    )
    row = found.first()
    if row is None:
        return None
    return WebhookTarget(status=row[0], provider=row[1], owner=row[2], seen=bool(row[3]), signal_id=row[4])


async def forget_signals(session: AsyncSession, *, signal_ids: list[int]) -> None:
    """These signals were delivered (or their workflows have ended): nothing is left to send."""
    await session.execute(text("DELETE FROM pending_signals WHERE id = ANY(:ids)"), {"ids": signal_ids})


async def unsent_signals(
    session: AsyncSession, *, older_than_seconds: float, limit: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """(id, job id, event) of signals queued over `older_than_seconds` ago and still not delivered."""
    found = await session.execute(
        text(
            "SELECT id, run_id, event FROM pending_signals"
            " WHERE created_at < now() - make_interval(secs => :age) ORDER BY id LIMIT :limit"
        ),
        {"age": older_than_seconds, "limit": limit},
    )
    return [(int(row[0]), str(row[1]), dict(row[2])) for row in found.all()]


async def record_refusal(session: AsyncSession, *, provider: str, job_id: str, code: str, reason: str) -> None:
    session.add(WebhookRefusal(provider=provider[:64], job_id=job_id[:256], code=code, reason=reason[:REASON_CHARS]))


async def recent_refusals(session: AsyncSession, *, tenant_id: str, limit: int) -> list[WebhookRefusal]:
    """The refusals that named the tenant's jobs, newest first; the `default` tenant (the deployment's own team)
    also sees those that named no job at all."""
    job_tenant = select(Run.tenant_id).where(col(Run.id) == col(WebhookRefusal.job_id)).scalar_subquery()
    mine = func.coalesce(job_tenant, DEFAULT_TENANT) == tenant_id
    found = await session.execute(
        select(WebhookRefusal).where(mine).order_by(col(WebhookRefusal.id).desc()).limit(limit)
    )
    return list(found.scalars())


async def prune_refusals(session: AsyncSession) -> int:
    """Forget refusals older than REFUSALS_KEPT_DAYS; returns how many went."""
    result = await session.execute(
        text("DELETE FROM webhook_refusals WHERE received_at < now() - make_interval(days => :days)"),
        {"days": REFUSALS_KEPT_DAYS},
    )
    return int(getattr(result, "rowcount", 0) or 0)
