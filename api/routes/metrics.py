"""GET /metrics: the Prometheus text exposition of this API process's metrics (core/metrics.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def metrics() -> Response:
    """This process's metrics for Prometheus to scrape (open, like the health routes)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
