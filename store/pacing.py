"""Burst-free pacing of provider calls, shared by every worker through PostgreSQL.

Temporal's task-queue limit (`max_task_queue_activities_per_second`) holds each provider's average rate and keeps
the backlog inside Temporal, but it is a token bucket that starts full: the first `ceil(rate)` calls of a backlog
go at once (more when the queue has several partitions). Providers count requests in short windows, so each call
also takes a turn here. One row per provider holds the earliest time its next call may go; a reservation takes
that time (or now, if it has passed) and moves the row on by one gap, 60 / calls per minute. The database clock
decides, so workers whose clocks disagree still keep to one schedule.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction

logger = logging.getLogger(__name__)

# A reservation is one short statement; a database that cannot answer in this time is treated as unavailable.
RESERVATION_TIMEOUT_SECONDS = 5.0

# One atomic statement: the row lock orders concurrent callers, the first call of a provider creates its row, and
# the answer is how long after the database's `clock_timestamp()` the caller's slot begins.
RESERVE_TURN = text(
    """
    INSERT INTO provider_pacing AS pacing (provider, next_slot_at)
    VALUES (:provider, clock_timestamp() + make_interval(secs => :gap))
    ON CONFLICT (provider) DO UPDATE
        SET next_slot_at = greatest(clock_timestamp(), pacing.next_slot_at) + make_interval(secs => :gap)
    RETURNING greatest(
        0, extract(epoch FROM pacing.next_slot_at - make_interval(secs => :gap) - clock_timestamp())
    )::float8
    """
)


class ProviderPacer:
    """Spaces each provider's calls evenly across all workers: one call per `60 / per_minute` seconds."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def reserve_turn(self, provider: str, per_minute: float) -> float:
        """Reserve the provider's next slot; returns the seconds until it begins (0 when it is free now)."""
        # The transaction (and its row lock) ends here, and the connection goes back to the pool before anyone sleeps.
        async with transaction(self.sessions) as session:
            result = await session.execute(RESERVE_TURN, {"provider": provider, "gap": 60.0 / per_minute})
            return float(result.scalar_one())

    async def wait_turn(self, provider: str, per_minute: float) -> float:
        """Wait for the provider's next slot; returns the seconds waited.

        Best effort: when the database cannot reserve a turn the call goes at once, held only by Temporal's queue
        limit, rather than failing (and spending one of its paid retry attempts) over pacing alone.
        """
        try:
            async with asyncio.timeout(RESERVATION_TIMEOUT_SECONDS):
                wait = await self.reserve_turn(provider, per_minute)
        except (OperationalError, InterfaceError, TimeoutError) as error:
            logger.warning("%s call not paced, the database is unavailable: %s", provider, error)
            return 0.0
        await asyncio.sleep(wait)
        return wait
