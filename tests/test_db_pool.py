"""The connection pool serves its waiters in order (core/db_pool.py), on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.util import greenlet_spawn
from sqlalchemy.util.queue import Empty, Full

from core.db import sqlalchemy_url
from core.db_pool import FirstComePool, FirstComeQueue


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(
        sqlalchemy_url(database_url), poolclass=FirstComePool, pool_size=1, max_overflow=0, pool_timeout=5
    )
    yield engine
    await engine.dispose()


async def test_a_returned_connection_goes_to_the_one_who_waited_not_to_whoever_asks_next(
    one_connection: AsyncEngine,
) -> None:
    order: list[str] = []

    async def use(name: str) -> None:
        async with one_connection.connect() as connection:
            await connection.execute(text("SELECT 1"))
            order.append(name)

    holder = await one_connection.connect()
    waiter = asyncio.create_task(use("waited"))
    await asyncio.sleep(0.1)  # in line for the only connection
    await holder.close()
    # Asking again at once, before the waiter has run: SQLAlchemy's own asyncio queue gives it to this newcomer.
    await use("asked next")
    await waiter
    assert order == ["waited", "asked next"]


async def connect(engine: AsyncEngine) -> AsyncConnection:
    return await engine.connect()


async def test_a_waiter_whose_time_runs_out_leaves_the_line_and_the_connection_goes_to_the_next(
    database_url: str,
) -> None:
    engine = create_async_engine(
        sqlalchemy_url(database_url), poolclass=FirstComePool, pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    try:
        holder = await engine.connect()
        with pytest.raises(exc.TimeoutError):
            async with engine.connect():
                pass
        patient = asyncio.create_task(connect(engine))
        await asyncio.sleep(0.05)
        await holder.close()
        connection = await asyncio.wait_for(patient, 2)
        assert (await connection.execute(text("SELECT 2"))).scalar() == 2
        await connection.close()
    finally:
        await engine.dispose()


async def test_a_waiter_cancelled_after_it_was_handed_an_item_passes_it_on() -> None:
    queue: FirstComeQueue[str] = FirstComeQueue(maxsize=1)

    def take() -> str:
        return queue.get(block=True, timeout=5)

    first = asyncio.create_task(greenlet_spawn(take))
    second = asyncio.create_task(greenlet_spawn(take))
    await asyncio.sleep(0.05)  # both in line
    queue.put("connection", block=False)  # handed to the first...
    first.cancel()  # ...which is cancelled before it runs again
    assert await asyncio.wait_for(second, 2) == "connection"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_without_a_waiter_an_item_waits_in_the_queue_and_a_get_that_cannot_wait_finds_none() -> None:
    queue: FirstComeQueue[str] = FirstComeQueue(maxsize=1)
    with pytest.raises(Empty):
        await greenlet_spawn(queue.get, False)
    queue.put("connection", block=False)
    assert queue.qsize() == 1
    assert await greenlet_spawn(queue.get, True, 1) == "connection"


async def test_an_item_handed_to_a_cancelled_waiter_stays_in_the_pool_even_past_its_size() -> None:
    queue: FirstComeQueue[str] = FirstComeQueue(maxsize=1)
    waiter = asyncio.create_task(greenlet_spawn(queue.get, True, 5))
    await asyncio.sleep(0.05)
    queue.put("overflow connection", block=False)  # handed to the waiter...
    waiter.cancel()  # ...cancelled before it runs again,
    queue.put("idle connection", block=False)  # while the queue fills up
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert queue.qsize() == 2  # the pool closes the surplus when it is checked out and returned
    with pytest.raises(Full):
        queue.put("one more", block=False)
