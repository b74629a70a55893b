"""What a stream learns from notifications (core/events.py) and what a canvas stream then reads: only the rows the
news names, and everything on its first read, after a reconnect or after a quiet spell."""

from __future__ import annotations

import json
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.routes.events import CanvasStreamState, canvas_update
from core.db import transaction
from core.events import News, Subscription
from store import canvas_nodes


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
        news.add(notification)
    assert news == News(events=True, nodes={"a": 3, "b": 1}, board_version=7, canvas_runs={"crun-1"})


def test_a_notification_of_an_unknown_kind_asks_for_everything() -> None:
    news = News()
    news.add({"kind": "something_new", "canvasId": "c"})
    assert news.everything


async def test_a_subscription_starts_with_everything_then_hands_over_news_once() -> None:
    subscription = Subscription()
    assert (await subscription.next_news(timeout=1)).everything
    subscription.notify({"kind": "node", "nodeId": "a", "version": 1})
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
