"""store/pacing.py on the real test PostgreSQL: slots a gap apart whoever asks, connections back before the wait,
and a provider call that goes on (unpaced) when the database is away."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from core.db import session_factory
from store.pacing import ProviderPacer
from tests.fakes.server import free_port

ONE_PER_SECOND = 60.0
# Concurrent reservations reach the database a few milliseconds apart, and each wait is counted from its own moment.
SLACK = 0.1


def fresh_provider() -> str:
    return f"pacing-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions over a pool of exactly one connection, so a caller that kept it while waiting would block the rest."""
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=5)
    yield session_factory(engine)
    await engine.dispose()


async def test_the_first_caller_of_a_provider_waits_nothing(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    pacer = ProviderPacer(db_sessions)
    started = time.monotonic()
    waited = await pacer.wait_turn(fresh_provider(), ONE_PER_SECOND)
    assert waited == 0.0
    assert time.monotonic() - started < 0.5


async def test_concurrent_reservations_get_distinct_slots_a_gap_apart(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    pacer = ProviderPacer(db_sessions)
    provider = fresh_provider()
    waits = sorted(await asyncio.gather(*(pacer.reserve_turn(provider, ONE_PER_SECOND) for _ in range(5))))
    assert waits[0] == 0.0
    for slot, wait in enumerate(waits):
        assert slot - SLACK <= wait <= slot, waits


async def test_a_provider_whose_slot_has_passed_goes_at_once(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    pacer = ProviderPacer(db_sessions)
    provider = fresh_provider()
    await pacer.reserve_turn(provider, 600.0)  # the next slot is 0.1 s away
    await asyncio.sleep(0.15)
    assert await pacer.reserve_turn(provider, 600.0) == 0.0


async def test_providers_are_paced_independently(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    pacer = ProviderPacer(db_sessions)
    first, second = fresh_provider(), fresh_provider()
    assert await pacer.reserve_turn(first, ONE_PER_SECOND) == 0.0
    assert await pacer.reserve_turn(second, ONE_PER_SECOND) == 0.0
    assert await pacer.reserve_turn(first, ONE_PER_SECOND) > 1.0 - SLACK


async def test_waiting_callers_hand_their_connection_back_first(
    one_connection: async_sessionmaker[AsyncSession],
) -> None:
    pacer = ProviderPacer(one_connection)
    provider = fresh_provider()
    started = time.monotonic()
    waiters = [asyncio.create_task(pacer.wait_turn(provider, ONE_PER_SECOND)) for _ in range(3)]
    await asyncio.sleep(0.3)
    # Two callers are still asleep on their turns; the only connection is free all the same.
    assert await pacer.reserve_turn(provider, ONE_PER_SECOND) > 2.0
    assert time.monotonic() - started < 1.0
    waited = sorted(await asyncio.gather(*waiters))
    assert [round(wait) for wait in waited] == [0, 1, 2], waited
    assert time.monotonic() - started >= 2.0 - SLACK


async def test_without_a_database_the_call_goes_unpaced(caplog: pytest.LogCaptureFixture) -> None:
    engine = create_async_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    pacer = ProviderPacer(session_factory(engine))
    with caplog.at_level(logging.WARNING, logger="store.pacing"):
        waited = await pacer.wait_turn("openai", ONE_PER_SECOND)
    await engine.dispose()
    assert waited == 0.0
    assert "openai call not paced, the database is unavailable" in caplog.text
