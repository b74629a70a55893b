"""`run_events`: each job's audit trail (created, status, progress, webhook, log, completed, error, cancelled),
deduplicated per run, every insert announced by a trigger's `pg_notify` so the streams hear of it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from models.payloads import StoredImage
from models.tables import Run, RunEvent
from models.vocabulary import (
    EventKind,
)
from store.jsonb import storable_json


async def add_event(
    session: AsyncSession,
    *,
    run_id: str,
    kind: EventKind,
    message: str,
    payload: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
) -> int | None:
    """Append an event with its human `message`; with a dedupe key a repeat is ignored.

    Returns the new id, or None for a repeat.
    """
    row = await session.execute(
        text(
            "INSERT INTO run_events (run_id, kind, payload, dedupe_key)"
            " VALUES (:run, :kind, CAST(:payload AS jsonb), :dedupe)"
            " ON CONFLICT (run_id, dedupe_key) DO NOTHING RETURNING id"
        ),
        {
            "run": run_id,
            "kind": str(kind),
            "payload": storable_json({**(payload or {}), "message": message}, what="event payload"),
            "dedupe": dedupe_key,
        },
    )
    found = row.first()
    return int(found[0]) if found else None


def describe_stored(images: list[StoredImage]) -> str:
    """'Stored 1024x1024 PNG, 1.2 MB', or a count and total for several images."""
    if not images:
        return "Completed without images"
    total = sum(image.size_bytes for image in images)
    if len(images) > 1:
        return f"Stored {len(images)} images, {_megabytes(total)}"
    image = images[0]
    kind = image.content_type.removeprefix("image/").upper()
    size = f"{image.width}x{image.height} " if image.width and image.height else ""
    return f"Stored {size}{kind}, {_megabytes(total)}"


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{size / 1000:.0f} kB"


async def list_events(session: AsyncSession, *, job_id: str, after_id: int = 0) -> list[RunEvent]:
    query = select(RunEvent).where(RunEvent.run_id == job_id, col(RunEvent.id) > after_id).order_by(col(RunEvent.id))
    return list((await session.execute(query)).scalars())


async def list_canvas_events(session: AsyncSession, *, canvas_id: str, after_id: int = 0) -> list[RunEvent]:
    """Events of every job of a canvas, in commit order of their ids."""
    query = (
        select(RunEvent)
        .join(Run, col(Run.id) == col(RunEvent.run_id))
        .where(Run.canvas_id == canvas_id, col(RunEvent.id) > after_id)
        .order_by(col(RunEvent.id))
    )
    return list((await session.execute(query)).scalars())


async def last_canvas_event_id(session: AsyncSession, *, canvas_id: str) -> int:
    found = await session.execute(
        text("SELECT COALESCE(max(e.id), 0) FROM run_events e JOIN runs r ON r.id = e.run_id WHERE r.canvas_id = :c"),
        {"c": canvas_id},
    )
    return int(found.scalar_one())
