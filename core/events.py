"""Live updates: one LISTEN connection per process, fanned out to every open stream.

Each notification says what changed (a job event's id, a node's id and version, a board's version, a canvas
run's id; see the triggers in migrations/), and a subscription collects it as `News`, so a stream reads only the
rows that changed, never a whole board per wake. The database stays the source of truth: a stream reads the
rows themselves, so nothing is lost or repeated, and a slow client never holds up the others (collecting news
is adding ids to sets). A stream's first read, a lost LISTEN connection and a quiet spell (`next_news`'s timeout)
all ask for `everything`: a full read, after which the stream carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg

from core.db import libpq_url

log = logging.getLogger(__name__)

CHANNEL = "imagejobs"
Topic = tuple[str, str]


def job_topic(job_id: str) -> Topic:
    return ("job", job_id)


def canvas_topic(canvas_id: str) -> Topic:
    return ("canvas", canvas_id)


def topics_of(notification: dict[str, Any]) -> list[Topic]:
    """Which streams a notification concerns (see the triggers in the initial migration)."""
    topics = []
    if notification.get("runId"):
        topics.append(job_topic(notification["runId"]))
    if notification.get("canvasId"):
        topics.append(canvas_topic(notification["canvasId"]))
    return topics


@dataclass
class News:
    """What changed on a subscription's topics since its stream last looked: read only these, unless
    `everything` (the first read, a reconnect, a quiet spell, or a notification of an unknown kind)."""

    everything: bool = False
    events: bool = False  # a job event was stored (streams read the events after their last one)
    nodes: dict[str, int] = field(default_factory=dict)  # node id -> newest version notified
    board_version: int | None = None
    canvas_runs: set[str] = field(default_factory=set)

    def add(self, notification: dict[str, Any]) -> None:
        kind = notification.get("kind")
        if kind == "event":
            self.events = True
        elif kind == "node" and notification.get("nodeId"):
            node, version = str(notification["nodeId"]), int(notification.get("version") or 0)
            self.nodes[node] = max(version, self.nodes.get(node, 0))
        elif kind == "board":
            self.board_version = max(int(notification.get("version") or 0), self.board_version or 0)
        elif kind == "canvas_run" and notification.get("canvasRunId"):
            self.canvas_runs.add(str(notification["canvasRunId"]))
        else:
            self.everything = True


class Subscription:
    """One stream's news, collected between its reads; it starts with `everything` (the stream's first read)."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self._news = News(everything=True)
        self.wake.set()

    def notify(self, notification: dict[str, Any]) -> None:
        self._news.add(notification)
        self.wake.set()

    def resync(self) -> None:
        self._news.everything = True
        self.wake.set()

    async def next_news(self, *, timeout: float) -> News:
        """The news since the last call, once there is some; after `timeout` seconds without any, `everything`
        (a safety net: a stream re-reads now and then even if a notification were lost)."""
        try:
            await asyncio.wait_for(self.wake.wait(), timeout=timeout)
        except TimeoutError:
            self._news.everything = True
        self.wake.clear()
        news, self._news = self._news, News()
        return news


class EventBus:
    """Listens on the `imagejobs` channel and wakes the subscribers of each notified topic."""

    def __init__(self, database_url: str, *, reconnect_delay: float = 1.0) -> None:
        self.database_url = libpq_url(database_url)
        self.reconnect_delay = reconnect_delay
        self._subscribers: dict[Topic, set[Subscription]] = defaultdict(set)
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
    async def subscribe(self, *topics: Topic) -> AsyncIterator[Subscription]:
        """The news of `topics` from now on, for as long as the block runs."""
        subscription = Subscription()
        for topic in topics:
            self._subscribers[topic].add(subscription)
        try:
            yield subscription
        finally:
            for topic in topics:
                self._subscribers[topic].discard(subscription)
                if not self._subscribers[topic]:
                    del self._subscribers[topic]

    @property
    def subscriber_count(self) -> int:
        return sum(len(wakes) for wakes in self._subscribers.values())

    def _deliver(self, notification: dict[str, Any]) -> None:
        for topic in topics_of(notification):
            for subscription in self._subscribers.get(topic, ()):
                subscription.notify(notification)

    def _resync_all(self) -> None:
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.resync()

    async def _listen_forever(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database_url, autocommit=True, application_name="imagejobs-events"
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    # Anything committed while we were away is read now by every stream.
                    self._resync_all()
                    async for notify in connection.notifies():
                        self._deliver(json.loads(notify.payload))
            except (psycopg.Error, OSError) as error:
                log.warning("event listener lost its connection (%s); reconnecting", error)
            self.connected.clear()
            await asyncio.sleep(self.reconnect_delay)
