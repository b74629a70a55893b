"""Counts for dashboards and operators: jobs by status, and per provider and model over a window."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field

from api.auth import CallerDep
from api.deps import SessionDep
from models.schemas import CamelModel
from models.vocabulary import JobStatus
from store import stats, tenants

DEFAULT_WINDOW = timedelta(hours=24)


class ProviderRow(CamelModel):
    """One provider and model's jobs created in the window."""

    provider: str
    model: str
    completed: int
    failed: int
    cancelled: int
    p50_seconds: float | None = Field(description="Median time from creation to completion; absent: none completed.")
    p95_seconds: float | None
    cost_usd: float | None = Field(description="What the ended jobs cost; absent when no job has a known price.")
    rate_limited: int = Field(description="Provider calls answered 429 (each retried).")
    poll_timeouts: int = Field(description="Jobs failed because the provider did not finish in time.")


class JobStats(CamelModel):
    workflow_id: str | None
    total: int
    by_status: dict[str, int]
    waiting_for_slot: int = Field(
        description="Of the pending jobs, those waiting in the tenant's line for a running slot (its"
        " maxConcurrentJobs); each starts as one of the tenant's running jobs ends."
    )
    since: datetime = Field(description="The start of the window the `providers` rows cover.")
    providers: list[ProviderRow]


router = APIRouter(prefix="/v1/stats", tags=["stats"])


@router.get("", response_model=JobStats)
async def job_stats(
    session: SessionDep,
    caller: CallerDep,
    canvas_id: Annotated[str | None, Query(alias="workflowId", max_length=256)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601; default: 24 hours ago.")] = None,
) -> JobStats:
    """How many of the tenant's jobs (a canvas token's: its canvas') are in each status, overall or for one
    canvas, and how many of the pending wait for a running slot; and per provider and model, the jobs created since
    `since`: outcomes, p50/p95 seconds to complete, cost, 429s and polling timeouts."""
    canvas = caller.key_of(canvas_id) if canvas_id is not None else caller.canvas
    counts = await stats.count_by_status(session, tenant_id=caller.tenant_id, canvas_id=canvas)
    waiting = await tenants.count_in_line(session, tenant_id=caller.tenant_id, canvas_id=canvas)
    by_status = {status.value: counts.get(status, 0) for status in JobStatus}
    start = datetime.now(UTC) - DEFAULT_WINDOW if since is None else since
    if start.tzinfo is None:  # a time without an offset is read as UTC
        start = start.replace(tzinfo=UTC)
    rows = await stats.provider_stats(session, tenant_id=caller.tenant_id, since=start, canvas_id=canvas)
    return JobStats(
        workflow_id=canvas_id,
        total=sum(by_status.values()),
        by_status=by_status,
        waiting_for_slot=waiting,
        since=start,
        providers=[ProviderRow.model_validate(asdict(row)) for row in rows],
    )
