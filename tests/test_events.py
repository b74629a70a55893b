"""Live status over SSE: a job's events in order and resumable, a canvas' node updates, one listener."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sse_starlette import ServerSentEvent

from activities.generation import ProgressGate
from api.routes.events import RECONNECT_AFTER_MS, ending_with_an_error_event
from tests.fixtures.stack import Stack
from tests.sse import SseEvent, read_events


async def collect(
    api: httpx.AsyncClient, path: str, *, headers: dict[str, str] | None = None, limit: int = 1000
) -> list[SseEvent]:
    received = []
    async with api.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in read_events(response):
            received.append(event)
            if len(received) >= limit:
                break
    return received


async def test_job_stream_is_ordered_and_resumable(stack: Stack) -> None:
    started = await stack.start("stream me")
    path = f"/v1/jobs/{started['jobId']}/events"
    first_part = await collect(stack.api, path, limit=3)
    rest = await collect(stack.api, path, headers={"Last-Event-ID": first_part[-1].id or ""})
    everything = await collect(stack.api, path)

    kinds = [event.event for event in everything]
    assert kinds[0] == "created"
    assert kinds[1] == "status"
    assert everything[1].json()["status"] == "running"
    assert kinds[-1] == "completed"
    assert "progress" in kinds
    progress = [event.json()["progress"] for event in everything if event.event == "progress"]
    assert progress == sorted(progress)
    # The local provider reports 10 steps in 300 ms; progress is recorded at most every 0.5 s.
    assert 1 <= len(progress) <= 2, progress
    ids = [int(event.id or 0) for event in everything]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [event.id for event in first_part + rest] == [event.id for event in everything]


async def test_canvas_stream_sees_its_own_nodes_only(stack: Stack) -> None:
    canvas, other = "canvas-" + uuid.uuid4().hex[:8], "canvas-" + uuid.uuid4().hex[:8]
    seen: dict[str, str] = {}

    async def watch() -> None:
        async with stack.api.stream("GET", f"/v1/canvases/{canvas}/events") as response:
            async for event in read_events(response):
                if event.event == "node":
                    node = event.json()
                    assert node["id"].startswith("n-")
                    seen[node["id"]] = node["data"]["status"]
                    if len(seen) == 3 and set(seen.values()) == {"completed"}:
                        return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    await stack.start("noise", workflowId=other, nodeId="x-1")
    jobs = await asyncio.gather(*(stack.start(f"job {i}", workflowId=canvas, nodeId=f"n-{i}") for i in range(3)))
    await asyncio.wait_for(watcher, timeout=30)
    assert seen == {"n-0": "completed", "n-1": "completed", "n-2": "completed"}
    for job in jobs:
        assert (await stack.wait(job["jobId"]))["status"] == "completed"


async def test_many_streams_share_one_listener(stack: Stack, db_sessions: async_sessionmaker[AsyncSession]) -> None:
    started = await stack.start("watched by many", promptSpec={"size": "64x64"})
    clients = 200
    limits = httpx.Limits(max_connections=clients + 10)
    async with httpx.AsyncClient(base_url=stack.base_url, limits=limits, timeout=60) as api:
        streams = await asyncio.gather(*(collect(api, f"/v1/jobs/{started['jobId']}/events") for _ in range(clients)))
        async with db_sessions() as session:
            listeners = (
                await session.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'imagejobs-events'")
                )
            ).scalar_one()
    assert listeners == 1
    assert all(stream[-1].event == "completed" for stream in streams)


async def test_streams_survive_a_lost_database_connection(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    started = await stack.start("through a reconnect")
    await stack.wait(started["jobId"])
    canvas = started["workflowId"]
    received: list[str] = []

    async def watch() -> None:
        async with stack.api.stream("GET", f"/v1/canvases/{canvas}/events") as response:
            async for event in read_events(response):
                if event.event == "node":
                    received.append(event.json()["data"].get("label", ""))
                    if received[-1] == "after":
                        return

    watcher = asyncio.create_task(watch())
    while not received:
        await asyncio.sleep(0.05)
    listener_pids = text("SELECT pid FROM pg_stat_activity WHERE application_name = 'imagejobs-events'")
    async with db_sessions() as session:
        (old_pid,) = (await session.execute(listener_pids)).scalars().all()
        killed = await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})
        assert killed.scalar_one() is True
        await session.commit()
    new_pids: list[int] = []
    for _ in range(100):
        async with db_sessions() as session:
            new_pids = [pid for pid in (await session.execute(listener_pids)).scalars().all() if pid != old_pid]
        if new_pids:
            break
        await asyncio.sleep(0.1)
    assert len(new_pids) == 1, "the event listener did not reconnect"
    renamed = await stack.api.put(f"/v1/canvases/{canvas}/nodes/node-1", json={"data": {"label": "after"}})
    assert renamed.status_code == 200
    await asyncio.wait_for(watcher, timeout=15)
    assert received[-1] == "after"


async def test_progress_gate_admits_one_point_per_interval() -> None:
    gate = ProgressGate(0.2)
    assert [gate.admit() for _ in range(5)] == [True, False, False, False, False]
    await asyncio.sleep(0.25)
    assert gate.admit() is True
    assert gate.admit() is False


async def test_a_stream_whose_database_fails_under_it_ends_with_an_error_event() -> None:
    # The headers went long ago: an `error` event is the only way left to tell the client, and `retry` when to
    # come back (it resumes from the last id it got).
    async def stream() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(id="1", event="progress", data="{}")
        raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection unexpectedly"))

    sent = [event async for event in ending_with_an_error_event(stream())]
    assert [event.event for event in sent] == ["progress", "error"]
    assert json.loads(str(sent[1].data)) == {
        "code": "database_unavailable",
        "message": "The database is unavailable; reconnect shortly.",
    }
    assert sent[1].retry == RECONNECT_AFTER_MS
