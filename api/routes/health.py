"""Liveness and readiness (open routes, for load balancers and orchestrators)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import StateDep, get_temporal

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "A dependency is not reachable."}})
async def readyz(state: StateDep) -> JSONResponse:
    """Database, Temporal and storage are reachable."""
    checks: dict[str, str] = {}
    try:
        async with state.sessions() as session:
            await session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"error: {error.__class__.__name__}"
    try:
        client = await get_temporal(state)
        await client.service_client.check_health()
        checks["temporal"] = "ok"
    except Exception as error:
        checks["temporal"] = f"error: {error.__class__.__name__}"
    try:
        await state.storage.check()
        checks["storage"] = "ok"
    except Exception as error:
        checks["storage"] = f"error: {error.__class__.__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )
