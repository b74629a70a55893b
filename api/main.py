"""The FastAPI application: a thin layer that starts and cancels jobs and reports on them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import Depends, FastAPI
from fastapi.telemetry import TelemetryConfig

from api.auth import tenant_caller
from api.canvas_tokens import redact_access_log
from api.cors import JsonCORSMiddleware
from api.deps import AppState
from api.errors import install_error_handlers
from api.limits import BodyLimit, JsonDepthLimit
from api.openapi_vocabulary import add_vocabulary
from api.request_id import RequestId
from api.request_timing import RequestTiming
from api.routes import (
    canvas_runs,
    canvases,
    events,
    files,
    health,
    jobs,
    metrics,
    providers,
    stats,
    tenants,
    uploads,
    webhook_endpoints,
    webhooks,
)
from api.web import install_web
from core.config import Settings, get_settings, warn_about_lookalikes
from core.db import create_engine, session_factory
from core.events import EventBus
from core.storage import build_storage
from core.tracing import install_tracing, tracing_enabled
from models.schemas import ErrorBody
from providers.discovery import build_directory, discover_at_start, keep_discovering
from providers.registry import build_providers

DISCOVERY_TIMEOUT_SECONDS = 15.0

# For the HTTP server: longer than the idle time of common HTTP clients and proxies (60 s). A server that closes an
# idle keep-alive connection first races the client's next request on it, which the client sees as a bare reset
# (during a webhook storm, a delivery failed so with an empty error).
KEEP_ALIVE_SECONDS = 75

DESCRIPTION = """
Durable AI image generation for canvas apps. Each job is a Temporal workflow: it calls the provider,
waits for its webhook or polls, stores the image in S3/R2 (or a local directory) and writes the result
into the canvas node. Errors are JSON: `{"code": "...", "message": "..."}`.

Records, events, `/status` answers and node data follow the specification's interfaces field for field: a job's
`status` is `pending`, `running`, `completed` or `failed` (a cancelled job is `failed` with `errorCode`
`Cancelled`), event `kind` is `progress`, `log` or `error`, and an optional field without a value is absent, never
`null`. Every other field is an addition a client written from the specification may ignore.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the database engine, storage and Temporal client live as long as it runs."""
    settings = settings or get_settings()
    warn_about_lookalikes()
    redact_access_log()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        storage = build_storage(settings)
        bus = EventBus(settings.require_database_url())
        await bus.start()
        # Only for discovery (GET /models): the API validates and lists, the workers call providers.
        http = httpx.AsyncClient(timeout=httpx.Timeout(DISCOVERY_TIMEOUT_SECONDS))
        state = AppState(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            storage=storage,
            providers=build_providers(settings, http),
            bus=bus,
            models=build_directory(settings),
        )
        app.state.imagejobs = state
        await discover_at_start(state.models, state.providers, state.sessions, settings)
        discovery = asyncio.create_task(keep_discovering(state.models, state.providers, state.sessions, settings))
        try:
            yield
        finally:
            discovery.cancel()
            await http.aclose()
            await app.state.imagejobs.handoff.aclose()
            await bus.stop()
            await storage.aclose()
            await engine.dispose()

    app = FastAPI(
        telemetry=telemetry(settings),
        title="Image Job Orchestrator",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by install_web, from local assets
        redoc_url=None,
    )
    install_error_handlers(app)
    # Webhooks have their own, larger cap (MAX_WEBHOOK_BYTES) and must not be cut short by this one.
    app.add_middleware(JsonDepthLimit)  # inside BodyLimit (added after it), so it reads capped bodies only
    app.add_middleware(
        BodyLimit,
        max_bytes=max(settings.MAX_REQUEST_BYTES, settings.MAX_WEBHOOK_BYTES),
        own_limit_prefixes=(f"{uploads.router.prefix}/",),
    )
    if settings.CORS_ORIGINS:
        app.add_middleware(JsonCORSMiddleware, origins=settings.CORS_ORIGINS)
    app.add_middleware(RequestId)  # every line of the request, and its answer, carry the id
    app.add_middleware(RequestTiming)  # outermost: the time to answer includes every other layer
    protected = [Depends(tenant_caller)]
    unauthorized: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "Authentication is on and no valid key or canvas token came."},
        403: {"model": ErrorBody, "description": "A canvas token on a route or canvas it does not open."},
    }
    routers = (
        jobs.router,
        canvases.router,
        canvas_runs.router,
        providers.router,
        events.router,
        stats.router,
        webhook_endpoints.router,
        tenants.token_router,
    )
    for router in (*routers, uploads.router):
        app.include_router(router, dependencies=protected, responses=unauthorized)
    app.include_router(tenants.router, responses=unauthorized)
    app.include_router(webhooks.router)
    app.include_router(uploads.signed_router)
    app.include_router(files.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    install_web(app)
    publish_vocabulary(app)
    return app


def publish_vocabulary(app: FastAPI) -> None:
    """The schema FastAPI makes, plus the vocabulary's enums (api/openapi_vocabulary.py), made once and cached."""
    make_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_vocabulary(make_schema())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema


# Requests not worth a span: scrapes, probes, the canvas' files and the docs.
UNTRACED_PATHS = ("/metrics", "/healthz", "/readyz", "/assets/", "/docs", "/openapi.json", "/favicon")


def telemetry(settings: Settings) -> TelemetryConfig:
    """FastAPI's own OpenTelemetry support: a server span per request (a child of the caller's `traceparent`) when
    tracing is enabled (core/tracing.py). Metrics and logs stay Prometheus' and ours; no span per dependency."""
    enabled = tracing_enabled(settings)
    if enabled:
        install_tracing(settings, "imagejobs-api")
    return {
        "tracing": enabled,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "exclude": lambda scope: str(scope.get("path", "")).startswith(UNTRACED_PATHS),
    }


def openapi_document() -> str:
    """The OpenAPI schema as committed in web/openapi.json (the canvas' API types are generated from it)."""
    import json

    from core.config import Settings

    return json.dumps(create_app(Settings(_env_file=None)).openapi(), indent=2, sort_keys=True) + "\n"
