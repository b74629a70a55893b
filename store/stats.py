"""Read-only figures over `runs`: counts by status, and per provider and model the outcomes, timings, cost and
failures of a window (`GET /v1/stats`, the `/ops` page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.errors import PROVIDER_TIMEOUT
from models.tables import Run


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
    " FROM runs WHERE created_at >= :since AND tenant_id = :tenant{canvas}"
    " GROUP BY provider, model ORDER BY provider, model"
)


async def provider_stats(
    session: AsyncSession, *, tenant_id: str, since: datetime, canvas_id: str | None = None
) -> list[ProviderStats]:
    """Per provider and model, the tenant's jobs created since `since` (one scan of `ix_runs_tenant_created`'s
    range)."""
    query = _PROVIDER_STATS.format(canvas=" AND canvas_id = :canvas" if canvas_id else "")
    parameters = {"since": since, "tenant": tenant_id, "canvas": canvas_id, "timeout": PROVIDER_TIMEOUT}
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


async def count_by_status(session: AsyncSession, *, tenant_id: str, canvas_id: str | None = None) -> dict[str, int]:
    query = select(Run.status, func.count()).where(col(Run.tenant_id) == tenant_id).group_by(Run.status)
    if canvas_id:
        query = query.where(Run.canvas_id == canvas_id)
    return {status: int(count) for status, count in (await session.execute(query)).all()}
