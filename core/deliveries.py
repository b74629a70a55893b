"""Who owns which provider job, and which webhook deliveries were refused; used by the webhook route and the
provider activities.

A submit records the provider's job id the moment the provider answers. The webhook route takes a delivery
only for the job that owns the provider job it reports on, and a job cancels at the provider only provider jobs
no other job owns. Refused deliveries are kept for operators (`GET /v1/webhooks/refusals`) for REFUSALS_KEPT_DAYS.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.tables import WebhookRefusal

REFUSALS_KEPT_DAYS = 7
REASON_CHARS = 500


@dataclass(frozen=True)
class WebhookTarget:
    """What the webhook route needs to know about the job a delivery names, read in one query."""

    status: str
    provider: str
    # The job that owns the provider job the delivery reports on (None: nobody recorded it yet).
    owner: str | None
    # Whether a delivery with the same dedupe key was already taken.
    seen: bool


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


async def provider_job_owner(session: AsyncSession, provider: str, provider_job_id: str) -> str | None:
    found = await session.execute(
        text("SELECT job_id FROM provider_jobs WHERE provider = :provider AND provider_job_id = :pid"),
        {"provider": provider, "pid": provider_job_id},
    )
    return found.scalar_one_or_none()


async def webhook_target(
    session: AsyncSession, job_id: str, provider: str, provider_job_id: str | None, dedupe_key: str | None
) -> WebhookTarget | None:
    """The job's status and provider, the reported provider job's owner, and whether the delivery was seen."""
    found = await session.execute(
        text(
            "SELECT r.status, r.provider,"
            " (SELECT p.job_id FROM provider_jobs p WHERE p.provider = :provider AND p.provider_job_id = :pid),"
            " EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = r.id AND e.dedupe_key = :dedupe)"
            " FROM runs r WHERE r.id = :run"
        ),
        {"run": job_id, "provider": provider, "pid": provider_job_id, "dedupe": dedupe_key},
    )
    row = found.first()
    if row is None:
        return None
    return WebhookTarget(status=row[0], provider=row[1], owner=row[2], seen=bool(row[3]))


async def record_refusal(session: AsyncSession, *, provider: str, job_id: str, code: str, reason: str) -> None:
    session.add(WebhookRefusal(provider=provider[:64], job_id=job_id[:256], code=code, reason=reason[:REASON_CHARS]))


async def recent_refusals(session: AsyncSession, *, limit: int) -> list[WebhookRefusal]:
    found = await session.execute(select(WebhookRefusal).order_by(col(WebhookRefusal.id).desc()).limit(limit))
    return list(found.scalars())


async def prune_refusals(session: AsyncSession) -> int:
    """Forget refusals older than REFUSALS_KEPT_DAYS; returns how many went."""
    result = await session.execute(
        text("DELETE FROM webhook_refusals WHERE received_at < now() - make_interval(days => :days)"),
        {"days": REFUSALS_KEPT_DAYS},
    )
    return int(getattr(result, "rowcount", 0) or 0)
