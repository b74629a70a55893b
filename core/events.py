"""Live updates: one LISTEN connection per process, fanned out to every open stream.

Notifications are only wake-up calls. The database stays the source of truth: a woken stream reads the rows
after the last one it sent, so nothing is lost or repeated, a slow client never holds up the others (waking
is setting a flag), and after a lost connection every stream re-reads once and carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import psycopg

from core.db import libpq_url

log = logging.getLogger(__name__)

CHANNEL = "imagejobs"
Topic = tuple[str, str]


def job_topic(job_id: str) -> Topic:
    return ("job", job_id)


def canvas_topic(canvas_id: str) -> Topic:
    return ("canvas", canvas_id)


def topics_of(notification: dict[str, str]) -> list[Topic]:
    """Which streams a notification concerns (see the triggers in the initial migration)."""
    topics = []
    if notification.get("runId"):
        topics.append(job_topic(notification["runId"]))
    if notification.get("canvasId"):
        topics.append(canvas_topic(notification["canvasId"]))
    return topics


class EventBus:
    """Listens on the `imagejobs` channel and wakes the subscribers of each notified topic."""

    def __init__(self, database_url: str, *, reconnect_delay: float = 1.0) -> None:
        self.database_url = libpq_url(database_url)
        self.reconnect_delay = reconnect_delay
        self._subscribers: dict[Topic, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="event-bus")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    @asynccontextmanager
    async def subscribe(self, *topics: Topic) -> AsyncIterator[asyncio.Event]:
        """An event that is set whenever one of `topics` may have news; the subscriber clears it."""
        wake = asyncio.Event()
        for topic in topics:
            self._subscribers[topic].add(wake)
        try:
            yield wake
        finally:
            for topic in topics:
                self._subscribers[topic].discard(wake)
                if not self._subscribers[topic]:
                    del self._subscribers[topic]

    @property
    def subscriber_count(self) -> int:
        return sum(len(wakes) for wakes in self._subscribers.values())

    def _wake(self, topics: list[Topic]) -> None:
        for topic in topics:
            for wake in self._subscribers.get(topic, ()):
                wake.set()

    def _wake_all(self) -> None:
        for wakes in self._subscribers.values():
            for wake in wakes:
                wake.set()

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, application_name="imagejobs-events"
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    # Anything committed while we were away is read now by every stream.
                    self._wake_all()
                    async for notify in connection.notifies():
                        self._wake(topics_of(json.loads(notify.payload)))
            except (psycopg.Error, OSError) as error:
                log.warning("event listener lost its connection (%s); reconnecting", error)
            self.connected.clear()
            await asyncio.sleep(self.reconnect_delay)
