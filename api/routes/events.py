"""Live status over Server-Sent Events: a job's audit trail, and everything that happens on a canvas.

Streams first send what is stored (after `Last-Event-ID` when the client resumes), then follow live
changes. Each event's `id` is its run_events id, so a reconnecting EventSource misses nothing and repeats
nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Header
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.auth import CallerDep, CanvasKeyPath
from api.deps import JobIdPath, StateDep
from api.errors import ApiError
from core.events import News, canvas_topic, job_topic
from core.metrics import SSE_CLIENTS
from models.schemas import (
    BoardNode,
    CanvasRunView,
    ErrorBody,
    ImageProgressEvent,
)
from models.tables import RunEvent, WorkflowNode
from models.vocabulary import TERMINAL_EVENT_KINDS
from store import canvas_nodes, canvas_runs, canvases, run_events, runs

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

# Each SSE message's `data` is an ImageProgressEvent (canvas streams also send `node` messages, a BoardNode).
EVENT_STREAM: dict[str, Any] = {
    "model": ImageProgressEvent,
    "description": "Server-Sent Events; each `data` is an ImageProgressEvent (`kind`: progress, log or error), and "
    "its `event` names what happened: created, status (running), progress, log, webhook, completed, error or "
    "cancelled.",
    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/ImageProgressEvent"}}},
}

KEEPALIVE_SECONDS = 15
# A woken stream re-reads at least this often, as a safety net under the notifications.
RECHECK_SECONDS = 5.0

# Database failures that end a stream with an `error` event, and how soon the client should come back.
DATABASE_FAILURES = (OperationalError, InterfaceError, PoolTimeoutError, OSError)
RECONNECT_AFTER_MS = 3000

# run_events.id is a bigint; a larger id would fail in the database, after the stream had begun.
MAX_EVENT_ID = 2**63 - 1
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", description="Resume after this event id.")]


def parse_last_event_id(value: str | None) -> int:
    if value is None or value == "":
        return 0
    # ASCII digits only: isdigit() also takes "²", which int() refuses.
    if not (value.isascii() and value.isdecimal()) or int(value) > MAX_EVENT_ID:
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be an event id this API sent.")
    return int(value)


async def ending_with_an_error_event(events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
    """The stream, ended by an `error` event the client can read when the database fails under it.

    The headers went long ago, so a status code cannot say it; the client reconnects after `retry` and resumes
    from the last id it got, missing nothing.
    """
    SSE_CLIENTS.inc()  # both streams pass through here: the gauge counts them from first byte to close
    try:
        async for event in events:
            yield event
    except DATABASE_FAILURES as error:
        log.warning("event stream ended: the database failed under it: %s", error)
        body = ErrorBody(code="database_unavailable", message="The database is unavailable; reconnect shortly.")
        yield ServerSentEvent(event="error", data=body.model_dump_json(exclude_none=True), retry=RECONNECT_AFTER_MS)
    finally:
        SSE_CLIENTS.dec()


def job_event(event: RunEvent) -> ServerSentEvent:
    body = ImageProgressEvent.from_event(event)
    # The SSE `event:` keeps the moment's own name (created, status, completed, ...): listeners may pick by it.
    return ServerSentEvent(
        id=str(event.id), event=event.kind, data=body.model_dump_json(by_alias=True, exclude_none=True)
    )


@router.get(
    "/v1/jobs/{jobId}/events",
    response_class=EventSourceResponse,
    responses={200: EVENT_STREAM, 400: {"model": ErrorBody}, 404: {"model": ErrorBody}},
)
async def stream_job_events(
    job_id: JobIdPath, state: StateDep, caller: CallerDep, last_event_id: LastEventId = None
) -> EventSourceResponse:
    """A job's events as SSE: stored ones, then live ones; ends after the terminal event. A browser's EventSource
    passes its canvas token as `?token=`."""
    after = parse_last_event_id(last_event_id)
    # Streams borrow a pooled connection only while they read, never for their whole life.
    async with state.sessions() as session:
        run = await runs.get_run(session, job_id=job_id)
        if run is None or not caller.sees(run.canvas_id):
            raise ApiError(404, "job_not_found", f"No job {job_id!r}.")

    async def events() -> AsyncIterator[ServerSentEvent]:
        nonlocal after
        async with state.bus.subscribe(job_topic(job_id)) as subscription:
            while True:
                news = await subscription.next_news(timeout=RECHECK_SECONDS)
                if news.everything or news.events:
                    async with state.autocommit_sessions() as reader:
                        # On a full read, the status comes before the events: a run that had ended then has its
                        # final event among them, so an empty read of an ended run means the stream is complete. A
                        # notified event needs no status: the stream ends with the terminal event itself.
                        finished = news.everything and await runs.is_finished(reader, job_id=job_id)
                        stored = await run_events.list_events(reader, job_id=job_id, after_id=after)
                else:
                    finished, stored = False, news.carried_events_after(after)
                for event in stored:
                    yield job_event(event)
                    after = event.id or after
                    if event.kind in TERMINAL_EVENT_KINDS:
                        return
                if finished and not stored:
                    return

    return EventSourceResponse(ending_with_an_error_event(events()), ping=KEEPALIVE_SECONDS)


# The comment a canvas stream sends once it has made its first read (its baseline).
SUBSCRIBED = "subscribed"


@router.get(
    "/v1/canvases/{workflowId}/events",
    response_class=EventSourceResponse,
    responses={200: EVENT_STREAM, 400: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def stream_canvas_events(
    canvas_id: CanvasKeyPath,
    state: StateDep,
    last_event_id: LastEventId = None,
) -> EventSourceResponse:
    """Every node update (`node`, with the React Flow node), board save (`board`, with its version), canvas run
    change (`run`, a CanvasRunView) and job event of a canvas, as SSE.

    A new stream starts with the current nodes; job events follow from `Last-Event-ID` or from now. The comment
    `: subscribed` follows the stream's first read: whatever changes on the canvas after it is heard. A browser's
    EventSource passes its canvas token as `?token=`.
    """
    after = parse_last_event_id(last_event_id)
    if not after:
        async with state.sessions() as session:
            after = await run_events.last_canvas_event_id(session, canvas_id=canvas_id)

    async def events() -> AsyncIterator[ServerSentEvent]:
        nonlocal after
        sent = CanvasStreamState()
        async with state.bus.subscribe(canvas_topic(canvas_id)) as subscription:
            while True:
                news = await subscription.next_news(timeout=RECHECK_SECONDS)
                # A session checks out a connection only once it runs a statement: carried rows cost none.
                async with state.autocommit_sessions() as reader:
                    update = await canvas_update(reader, canvas_id, news, sent, after)
                for message in update.messages:
                    yield message
                after = update.after
                if not sent.subscribed:
                    sent.subscribed = True
                    yield ServerSentEvent(comment=SUBSCRIBED)

    return EventSourceResponse(ending_with_an_error_event(events()), ping=KEEPALIVE_SECONDS)


@dataclass
class CanvasStreamState:
    """What one canvas stream has sent: each node's version, each canvas run's fingerprint, the board's version."""

    node_versions: dict[str, int] = field(default_factory=dict)
    run_fingerprints: dict[str, str] = field(default_factory=dict)
    board_version: int | None = None
    subscribed: bool = False


@dataclass
class CanvasUpdate:
    messages: list[ServerSentEvent]
    after: int  # the last job event sent


async def canvas_update(
    session: AsyncSession, canvas_id: str, news: News, sent: CanvasStreamState, after: int
) -> CanvasUpdate:
    """The messages a canvas stream owes after `news`: on `everything`, the whole board compared with what was
    sent; otherwise the carried rows, and only the notified nodes, board version, job events and canvas runs that
    came without theirs are read."""
    messages: list[ServerSentEvent] = []
    board = await canvases.board_version(session, canvas_id=canvas_id) if news.everything else news.board_version
    saved = board is not None and board != sent.board_version
    if saved:
        if sent.board_version is not None:
            # A save (another tab's, say) may have deleted nodes or changed edges: reload the board.
            messages.append(ServerSentEvent(event="board", data=json.dumps({"version": board})))
        sent.board_version = board
    # A save may delete a node, and a node made again under its id counts its versions from 1 anew: read the whole
    # board then, so the versions sent are those of the nodes that exist.
    full = news.everything or saved
    for node in await changed_nodes(session, canvas_id, news, sent.node_versions, full=full):
        sent.node_versions[node.id] = node.version
        messages.append(ServerSentEvent(event="node", data=BoardNode.from_row(node).model_dump_json(by_alias=True)))
    if news.everything or news.events:
        events = await run_events.list_canvas_events(session, canvas_id=canvas_id, after_id=after)
    else:
        events = news.carried_events_after(after)
    for event in events:
        messages.append(job_event(event))
        after = event.id or after
    if news.everything or news.canvas_runs:
        only = None if news.everything else news.canvas_runs
        for view in await changed_canvas_runs(session, canvas_id, sent.run_fingerprints, only=only):
            messages.append(ServerSentEvent(event="run", data=view.model_dump_json(by_alias=True)))
    return CanvasUpdate(messages=messages, after=after)


async def changed_nodes(
    session: AsyncSession, canvas_id: str, news: News, sent_versions: dict[str, int], *, full: bool
) -> list[WorkflowNode]:
    """The nodes whose version differs from the one sent: all of the board's on a `full` read (which also forgets
    the versions of deleted nodes in `sent_versions`), else the notified ones not already sent at that version
    (carried, or read when they came without their rows)."""
    if full:
        nodes = await canvas_nodes.list_nodes(session, canvas_id=canvas_id)
        for gone in set(sent_versions) - {node.id for node in nodes}:
            del sent_versions[gone]
        return [node for node in nodes if sent_versions.get(node.id) != node.version]
    carried = [node for node in news.carried_nodes.values() if sent_versions.get(node.id, -1) < node.version]
    wanted = [node for node, version in news.nodes.items() if sent_versions.get(node, -1) < version]
    if not wanted:
        return carried
    nodes = await canvas_nodes.nodes_by_id(session, canvas_id=canvas_id, node_ids=wanted)
    return carried + [node for node in nodes if sent_versions.get(node.id) != node.version]


async def changed_canvas_runs(
    session: AsyncSession, canvas_id: str, sent: dict[str, str], *, only: set[str] | None = None
) -> list[CanvasRunView]:
    """The canvas' recent runs (or `only` these) that changed since they were last sent (`sent` is updated)."""
    views = []
    for run_id, fingerprint in (await canvas_runs.recent_canvas_run_versions(session, canvas_id=canvas_id)).items():
        if sent.get(run_id) == fingerprint or (only is not None and run_id not in only):
            continue
        found = await canvas_runs.read_canvas_run(session, canvas_id=canvas_id, run_id=run_id)
        if found is not None:
            sent[run_id] = fingerprint
            views.append(CanvasRunView.from_rows(*found))
    return views
