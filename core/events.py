"""Live updates: one LISTEN connection per process, fanned out to every open stream.

Each notification says what changed (a job event's id, a node's id and version, a board's version, a canvas
run's id; see the triggers in migrations/), and a subscription collects it as `News`, so a stream reads only the
rows that changed, never a whole board per wake. A job event's and a node's notification also carry the row itself
when it fits in a NOTIFY (migration 0017): the stream sends that row as it is, without a query, and reads the
database only for a row that did not fit. The database stays the source of truth: a carried row is the committed
row, and a stream's first read, a lost LISTEN connection, a quiet spell (`next_news`'s timeout) and a slow
client's overflowing news all ask for `everything`, or for the events to be read: nothing is lost or repeated,
and a slow client never holds up the others (collecting news is adding to bounded lists and maps).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from core.db import libpq_url
from models.tables import RunEvent, WorkflowNode

log = logging.getLogger(__name__)

CHANNEL = "imagejobs"
Row = TypeVar("Row", RunEvent, WorkflowNode)
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


# A stream that has not looked for this many carried events reads them from the database instead.
MAX_CARRIED_EVENTS = 256


@dataclass(frozen=True)
class Notice:
    """One notification as the bus read it: its fields, and the row it carries (a job event's or a node's), built
    once for all the streams it concerns."""

    fields: dict[str, Any]
    event: RunEvent | None = None
    node: WorkflowNode | None = None

    @classmethod
    def parse(cls, fields: dict[str, Any]) -> Notice:
        kind = fields.get("kind")
        if kind == "event":
            return cls(fields, event=carried_event(fields))
        if kind == "node" and fields.get("nodeId"):
            return cls(fields, node=carried_node(fields))
        return cls(fields)


@dataclass
class News:
    """What changed on a subscription's topics since its stream last looked: send the carried rows and read only
    the rest, unless `everything` (the first read, a reconnect, a quiet spell, or a notification of an unknown
    kind)."""

    everything: bool = False
    events: bool = False  # a job event came without its row: read the events after the stream's last one
    carried_events: list[RunEvent] = field(default_factory=list)  # job events that came with their rows
    nodes: dict[str, int] = field(default_factory=dict)  # node id -> newest version notified without its row
    carried_nodes: dict[str, WorkflowNode] = field(default_factory=dict)  # node id -> its newest carried row
    board_version: int | None = None
    canvas_runs: set[str] = field(default_factory=set)

    def add(self, notice: Notice) -> None:
        notification = notice.fields
        kind = notification.get("kind")
        if kind == "event":
            self._add_event(notice.event)
        elif kind == "node" and notification.get("nodeId"):
            self._add_node(notification, notice.node)
        elif kind == "board":
            self.board_version = max(int(notification.get("version") or 0), self.board_version or 0)
        elif kind == "canvas_run" and notification.get("canvasRunId"):
            self.canvas_runs.add(str(notification["canvasRunId"]))
        else:
            self.everything = True

    def carried_events_after(self, event_id: int) -> list[RunEvent]:
        """The carried events a stream that has sent up to `event_id` still owes, in id order (as a read gives)."""
        return sorted((event for event in self.carried_events if (event.id or 0) > event_id), key=lambda e: e.id or 0)

    def _add_event(self, event: RunEvent | None) -> None:
        if self.events:
            return  # the stream reads the events anyway
        if event is None or len(self.carried_events) >= MAX_CARRIED_EVENTS:
            self.events, self.carried_events = True, []
        else:
            self.carried_events.append(event)

    def _add_node(self, notification: dict[str, Any], row: WorkflowNode | None) -> None:
        node_id, version = str(notification["nodeId"]), int(notification.get("version") or 0)
        carried = self.carried_nodes.get(node_id)
        if version <= max(self.nodes.get(node_id, -1), carried.version if carried else -1):
            return  # a late notification of an older version
        if row is not None and node_id not in self.nodes:
            self.carried_nodes[node_id] = row
        else:
            self.carried_nodes.pop(node_id, None)
            self.nodes[node_id] = version


def carried_event(notification: dict[str, Any]) -> RunEvent | None:
    """The job event a notification carries (see migration 0017), or None when it came without its row."""
    return _carried(
        notification,
        lambda row: RunEvent(
            id=int(notification["id"]),
            run_id=str(notification["runId"]),
            kind=str(row["kind"]),
            payload=dict(row["payload"]),
            ts=datetime.fromisoformat(row["ts"]),
        ),
    )


def carried_node(notification: dict[str, Any]) -> WorkflowNode | None:
    """The node row a notification carries (see migration 0017), or None when it came without it."""
    return _carried(
        notification,
        lambda row: WorkflowNode(
            canvas_id=str(notification["canvasId"]),
            id=str(notification["nodeId"]),
            version=int(notification["version"]),
            node_type=str(row["type"]),
            position=dict(row["position"]),
            node_data=dict(row["data"]),
        ),
    )


def _carried(notification: dict[str, Any], build: Callable[[dict[str, Any]], Row]) -> Row | None:
    row = notification.get("row")
    if not isinstance(row, dict):
        return None
    try:
        return build(row)
    except (KeyError, TypeError, ValueError):
        # A row of a shape this code does not know (a newer trigger's, say): the stream reads it instead.
        log.warning("a %s notification carried a row of an unknown shape; reading it", notification.get("kind"))
        return None


class Subscription:
    """One stream's news, collected between its reads; it starts with `everything` (the stream's first read)."""

    def __init__(self) -> None:
        self.wake = asyncio.Event()
        self._news = News(everything=True)
        self.wake.set()

    def notify(self, notice: Notice) -> None:
        self._news.add(notice)
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
        subscriptions = [sub for topic in topics_of(notification) for sub in self._subscribers.get(topic, ())]
        if not subscriptions:
            return  # no stream cares: its row is not even built
        notice = Notice.parse(notification)
        for subscription in subscriptions:
            subscription.notify(notice)

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
