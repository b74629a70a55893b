"""Waiting in tests, written once: `eventually` polls a condition until it holds, and `subscribed` opens a canvas'
event stream and returns once the stream has made its first read.

A test never sleeps and then acts: a sleep is either too short on a loaded machine or too long everywhere else.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import httpx

from tests.sse import SseEvent, parse_events

T = TypeVar("T")

POLL_SECONDS = 0.05
# The comment a canvas stream sends after its first read (api/routes/events.py).
SUBSCRIBED_COMMENT = ": subscribed"


async def eventually(
    check: Callable[[], T | Awaitable[T]], *, what: str, timeout: float = 30, interval: float = POLL_SECONDS
) -> T:
    """Call `check` (plain or async) until it returns something truthy, and return that; after `timeout` seconds
    fail, naming `what` and the last value seen. In the manner of sdk-python's `assert_eq_eventually`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        found: T = await value if inspect.isawaitable(value) else value  # type: ignore[assignment]
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {found!r})")
        await asyncio.sleep(interval)


def eventually_blocking(check: Callable[[], T], *, what: str, timeout: float = 30, interval: float = 0.1) -> T:
    """`eventually` for code that is not async (a child process' output file, a thread)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {found!r})")
        time.sleep(interval)
    return found


@asynccontextmanager
async def subscribed(api: httpx.AsyncClient, path: str, **params: str) -> AsyncIterator[AsyncIterator[SseEvent]]:
    """Open a canvas' event stream and enter once it has made its first read (so a change made inside the block
    is heard); yields the stream's events from then on."""
    async with api.stream("GET", path, params=params) as response:
        assert response.status_code == 200, await response.aread()
        lines = response.aiter_lines()
        async for line in lines:
            if line == SUBSCRIBED_COMMENT:
                break
        else:
            raise AssertionError(f"{path} ended before it said it was subscribed")
        yield parse_events(lines)
