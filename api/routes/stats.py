"""Counts for dashboards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import SessionDep
from core import runs
from models.schemas import CamelModel
from models.vocabulary import JobStatus


class JobStats(CamelModel):
    workflow_id: str | None
    total: int
    by_status: dict[str, int]


router = APIRouter(prefix="/v1/stats", tags=["stats"])


@router.get("", response_model=JobStats)
async def job_stats(
    session: SessionDep, canvas_id: Annotated[str | None, Query(alias="workflowId", max_length=256)] = None
) -> JobStats:
    """How many jobs are in each status, overall or for one canvas."""
    counts = await runs.count_by_status(session, canvas_id=canvas_id)
    by_status = {status.value: counts.get(status, 0) for status in JobStatus}
    return JobStats(workflow_id=canvas_id, total=sum(by_status.values()), by_status=by_status)
