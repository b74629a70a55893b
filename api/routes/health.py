"""Liveness, readiness and the client configuration (open routes, for load balancers, orchestrators and apps that
have not authenticated yet)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import text

from api.deps import StateDep, get_temporal
from models.schemas import CamelModel

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class ClientConfig(CamelModel):
    """What a client needs before it authenticates."""

    api_keys_required: bool = Field(
        description="Whether job, canvas and event routes need an API key or a canvas token."
    )
    temporal_ui_url: str | None = Field(description="The Temporal Web UI, for links to each job's workflow page.")
    temporal_namespace: str


@router.get("/v1/config", response_model=ClientConfig)
async def client_config(state: StateDep) -> ClientConfig:
    """Whether an API key is needed, and where the Temporal Web UI is (the canvas links jobs to it)."""
    settings = state.settings
    return ClientConfig(
        api_keys_required=settings.authentication_on,
        temporal_ui_url=settings.TEMPORAL_UI_URL,
        temporal_namespace=settings.TEMPORAL_NAMESPACE,
    )


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
