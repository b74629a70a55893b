"""What a stream learns from notifications (core/events.py) and what a canvas stream then reads: nothing for the
rows the notifications carry, only the rows the news names without carrying them, and everything on its first read,
after a reconnect or after a quiet spell."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.routes.events import CanvasStreamState, canvas_update, job_event
from core.db import libpq_url, transaction
from core.events import CHANNEL, MAX_CARRIED_EVENTS, News, Notice, Subscription
from models.payloads import ImageJobInput, PromptSpec
from models.schemas import BoardNode, BoardSave
from models.vocabulary import EventKind
from store import canvas_nodes, canvases, run_events, runs


def test_news_collects_what_each_notification_names() -> None:
    news = News()
    for notification in (
        {"kind": "node", "canvasId": "c", "nodeId": "a", "version": 3},
        {"kind": "node", "canvasId": "c", "nodeId": "a", "version": 2},  # late, older: the newest stays
        {"kind": "node", "canvasId": "c", "nodeId": "b", "version": 1},
        {"kind": "board", "canvasId": "c", "version": 7},
        {"kind": "event", "id": 41, "runId": "job-1", "canvasId": "c"},
        {"kind": "canvas_run", "canvasId": "c", "canvasRunId": "crun-1"},
    ):
        news.add(Notice.parse(notification))
    assert news == News(events=True, nodes={"a": 3, "b": 1}, board_version=7, canvas_runs={"crun-1"})


def test_a_notification_of_an_unknown_kind_asks_for_everything() -> None:
    news = News()
    news.add(Notice.parse({"kind": "something_new", "canvasId": "c"}))
    assert news.everything


async def test_a_subscription_starts_with_everything_then_hands_over_news_once() -> None:
    subscription = Subscription()
    assert (await subscription.next_news(timeout=1)).everything
    subscription.notify(Notice.parse({"kind": "node", "nodeId": "a", "version": 1}))
    assert await subscription.next_news(timeout=1) == News(nodes={"a": 1})
    # Nothing new for a while: read everything again, in case a notification was lost.
    assert (await subscription.next_news(timeout=0.01)).everything
    subscription.resync()  # the LISTEN connection came back
    assert (await subscription.next_news(timeout=1)).everything


async def test_a_canvas_stream_reads_only_the_nodes_the_news_names(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    canvas_id = f"news-{uuid.uuid4().hex[:8]}"
    async with transaction(db_sessions) as session:
        for node in ("a", "b", "c"):
            await canvas_nodes.upsert_node(
                session, canvas_id=canvas_id, node_id=node, node_type=None, position=None, data={"prompt": node}
            )
    sent = CanvasStreamState()
    async with db_sessions() as session:
        first = await canvas_update(session, canvas_id, News(everything=True), sent, after=0)
    assert sorted(json.loads(message.data)["id"] for message in first.messages) == ["a", "b", "c"]

    async with transaction(db_sessions) as session:
        for node in ("a", "b"):
            await canvas_nodes.upsert_node(
                session, canvas_id=canvas_id, node_id=node, node_type=None, position=None, data={"prompt": "again"}
            )
    b_version = sent.node_versions["b"] + 1
    async with db_sessions() as session:
        # The news names only b (a's notification is still on its way): only b is read and sent.
        update = await canvas_update(session, canvas_id, News(nodes={"b": b_version}), sent, after=0)
        # A notification for a version already sent reads nothing.
        repeat = await canvas_update(session, canvas_id, News(nodes={"b": b_version}), sent, after=0)
    assert [(message.event, json.loads(message.data)["id"]) for message in update.messages] == [("node", "b")]
    assert repeat.messages == []


def event_notification(event_id: int, *, row: dict[str, Any] | None = None) -> dict[str, Any]:
    notification: dict[str, Any] = {"kind": "event", "id": event_id, "runId": "job-1", "canvasId": "c"}
    return notification | ({"row": row} if row else {})


def node_notification(node_id: str, version: int, *, data: dict[str, Any] | None = None) -> dict[str, Any]:
    notification: dict[str, Any] = {"kind": "node", "canvasId": "c", "nodeId": node_id, "version": version}
    row = {"type": "imageGeneration", "position": {"x": 1, "y": 2}, "data": data}
    return notification | ({"row": row} if data is not None else {})


LOG_ROW = {"kind": "log", "payload": {"message": "hello"}, "ts": "2026-12-07T04:26:18.12+05:30"}


def test_news_keeps_carried_rows_and_reads_only_what_came_without() -> None:
    news = News()
    for notification in (
        event_notification(42, row=LOG_ROW),
        event_notification(41, row=LOG_ROW),  # committed after 42: sent in id order all the same
        node_notification("a", 2, data={"prompt": "two"}),
        node_notification("a", 1, data={"prompt": "one"}),  # late, older: the newest row stays
        node_notification("b", 1, data={"prompt": "b"}),
        node_notification("b", 2),  # too large to carry: b is read, its older carried row dropped
    ):
        news.add(Notice.parse(notification))
    assert not news.events and news.nodes == {"b": 2}
    assert [(event.id, event.kind, event.payload) for event in news.carried_events_after(0)] == [
        (41, "log", {"message": "hello"}),
        (42, "log", {"message": "hello"}),
    ]
    assert [event.id for event in news.carried_events_after(41)] == [42]
    assert news.carried_events[0].ts.utcoffset() == timedelta(hours=5, minutes=30)
    assert {node_id: (node.version, node.node_data) for node_id, node in news.carried_nodes.items()} == {
        "a": (2, {"prompt": "two"})
    }


def test_an_event_without_its_row_or_past_the_bound_has_the_stream_read_the_events() -> None:
    news = News()
    for notification in (event_notification(1, row=LOG_ROW), event_notification(2), event_notification(3, row=LOG_ROW)):
        news.add(Notice.parse(notification))
    assert news.events and news.carried_events == []

    slow = News()
    for event_id in range(MAX_CARRIED_EVENTS + 1):
        slow.add(Notice.parse(event_notification(event_id + 1, row=LOG_ROW)))
    assert slow.events and slow.carried_events == []

    odd = News()
    odd.add(Notice.parse(event_notification(1, row={"kind": "log", "payload": {}, "ts": "yesterday"})))
    assert odd.events


async def test_a_canvas_stream_sends_carried_rows_without_reading_them(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    canvas_id = f"news-{uuid.uuid4().hex[:8]}"  # nothing of it is stored: whatever is sent came from the news
    news = News()
    news.add(Notice.parse(node_notification("a", 3, data={"prompt": "carried"}) | {"canvasId": canvas_id}))
    news.add(Notice.parse(event_notification(7, row=LOG_ROW) | {"canvasId": canvas_id}))
    sent = CanvasStreamState(node_versions={"a": 2})
    async with db_sessions() as session:
        update = await canvas_update(session, canvas_id, news, sent, after=5)
    assert [(message.event, json.loads(message.data).get("data")) for message in update.messages] == [
        ("node", {"prompt": "carried"}),
        ("log", {}),
    ]
    assert (update.after, sent.node_versions) == (7, {"a": 3})


async def notifications_until(
    database_url: str, write: Callable[[], Awaitable[None]], last: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """The notifications on the product's channel once `write` has committed, up to the `last` one."""
    notified = []
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        await write()
        async for notice in listener.notifies(timeout=5):
            notified.append(json.loads(notice.payload))
            if last(notified[-1]):
                return notified
    raise AssertionError(f"the last notification never came; got {notified}")


async def test_a_carried_row_streams_exactly_as_the_stored_row_reads(
    database_url: str, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """In a database whose sessions are not in UTC, a carried event and node give the stream the same messages
    as reading them back, time zone and all; a node too large to carry comes without its row."""
    job_id, canvas_id = f"job_{uuid.uuid4().hex[:12]}", f"news-{uuid.uuid4().hex[:8]}"
    large = {"prompt": "a fox in the snow, " * 500}  # 10 kB: over what a NOTIFY may carry

    async def write() -> None:
        async with transaction(db_sessions) as session:
            await session.execute(text("SET LOCAL TIME ZONE 'Asia/Kolkata'"))
            await runs.record_run(
                session,
                job=ImageJobInput(
                    job_id=job_id,
                    canvas_id=canvas_id,
                    node_id="small",
                    provider="local",
                    model="procedural",
                    spec=PromptSpec(prompt="a fox"),
                ),
            )
            await run_events.add_event(
                session,
                run_id=job_id,
                kind=EventKind.PROGRESS,
                message="½ way: 50%",
                payload={"progress": 50, "detail": {"steps": [1, 2]}},
            )
            for node_id, data in (("small", {"prompt": "a fox 🦊"}), ("large", large)):
                await canvas_nodes.upsert_node(
                    session, canvas_id=canvas_id, node_id=node_id, node_type=None, position=None, data=data
                )

    notified = await notifications_until(
        database_url, write, lambda notification: notification.get("nodeId") == "large"
    )
    news = News()
    for notification in notified:
        news.add(Notice.parse(notification))
    async with db_sessions() as session:
        await session.execute(text("SET TIME ZONE 'Asia/Kolkata'"))
        stored_events = await run_events.list_events(session, job_id=job_id)
        stored_nodes = await canvas_nodes.list_nodes(session, canvas_id=canvas_id)
    carried_events = news.carried_events_after(0)
    assert [job_event(event).encode() for event in carried_events] == [
        job_event(event).encode() for event in stored_events
    ]
    assert "+05:30" in json.loads(job_event(carried_events[-1]).data)["timestamp"]
    small = next(node for node in stored_nodes if node.id == "small")
    assert list(news.carried_nodes) == ["small"] and news.nodes == {"large": 1}
    carried = news.carried_nodes["small"]
    assert (BoardNode.from_row(carried), carried.version) == (BoardNode.from_row(small), small.version)


async def test_a_node_deleted_by_a_save_and_made_again_streams_from_its_first_version(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    canvas_id = f"news-{uuid.uuid4().hex[:8]}"

    async def save(*node_ids: str) -> None:
        board = BoardSave(nodes=[BoardNode(id=node_id, data={"prompt": node_id}) for node_id in node_ids])
        async with transaction(db_sessions) as session:
            await canvases.save_board(session, canvas_id=canvas_id, board=board, expected_version=None)

    async def touch(node_id: str, times: int) -> int:
        async with transaction(db_sessions) as session:
            for index in range(times):
                node = await canvas_nodes.upsert_node(
                    session, canvas_id=canvas_id, node_id=node_id, node_type=None, position=None, data={"n": index}
                )
        return node.version

    async def update(news: News) -> list[tuple[str | None, Any]]:
        async with db_sessions() as session:
            found = await canvas_update(session, canvas_id, news, sent, after=0)
        return [(message.event, json.loads(message.data).get("id")) for message in found.messages]

    sent = CanvasStreamState()
    await save("a", "b")
    await update(News(everything=True))
    version = await touch("b", 3)
    assert await update(News(nodes={"b": version})) == [("node", "b")]
    await save("a")  # b is deleted
    assert await update(News(board_version=2)) == [("board", None)]
    again = await touch("b", 1)  # b again, at a version below the one last sent for the old b
    assert again < version
    assert await update(News(nodes={"b": again})) == [("node", "b")]
