"""Dependencies shared by the routes, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.errors import ApiError
from api.limits import InFlight
from core.config import Settings
from core.db import autocommit_session_factory
from core.events import EventBus
from core.storage import ObjectStorage
from core.tracing import current_traceparent, valid_traceparent
from handoff.sweep import Handoff
from models.schemas import ID_PATTERN
from providers.base import ImageProvider
from providers.catalog import ModelDirectory


@dataclass
class AppState:
    """What the API process holds for its whole life; built in the lifespan."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    storage: ObjectStorage
    providers: dict[str, ImageProvider]
    bus: EventBus
    models: ModelDirectory
    temporal: Client | None = None

    async def temporal_client(self) -> Client:
        """The Temporal client, connected on first use so the API starts (and reports) while Temporal is down."""
        if self.temporal is None:
            from core.temporal import connect

            self.temporal = await connect(self.settings)
        return self.temporal

    @cached_property
    def handoff(self) -> Handoff:
        """Starts and signals owed to Temporal for what requests committed (made after their answer)."""
        return Handoff(self.temporal_client, self.settings, self.autocommit_sessions)

    @cached_property
    def webhooks_in_flight(self) -> InFlight:
        return InFlight(self.settings.WEBHOOK_MAX_IN_FLIGHT, retry_after_seconds=RETRY_AFTER_SECONDS)

    @cached_property
    def autocommit_sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for single statements (the hot paths: a job's start, a webhook's lookup and record)."""
        return autocommit_session_factory(self.engine)


# Dependencies are `async def` even when they do not await: FastAPI runs plain `def` ones in a thread pool,
# a thread hand-off on every request for a dictionary lookup.
async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.imagejobs
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_temporal(state: StateDep) -> Client:
    try:
        return await state.temporal_client()
    except Exception as error:  # the client's connect raises bare RuntimeErrors
        raise ApiError(503, "temporal_unavailable", f"Temporal is not reachable: {error}") from error


TemporalDep = Annotated[Client, Depends(get_temporal)]

# How long a caller told to come back (503: overloaded, Temporal unreachable) should wait.
RETRY_AFTER_SECONDS = 2


JobIdPath = Annotated[str, Path(alias="jobId", description="The job id (`jobId` of its record).")]
NodeIdPath = Annotated[str, Path(alias="nodeId", pattern=ID_PATTERN, description="The node id on its canvas.")]


async def request_traceparent(request: Request) -> str | None:
    """The trace a job made by this request belongs to: the API's own span when it traces (a child of the
    caller's `traceparent`, if one came), else the caller's `traceparent` as sent."""
    return current_traceparent() or valid_traceparent(request.headers)


TraceParentDep = Annotated[str | None, Depends(request_traceparent)]
