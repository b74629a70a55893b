"""The floor's database step: one real PostgreSQL statement, committed through the product's own pool settings.

The product's four database steps (create_run, mark_running, update_node, complete_run) each commit a statement
or two. A floor whose steps are no-ops leaves that cost out; this one keeps it, so figure 4 can set the product
beside a floor that does the same bookkeeping, and show what the product adds on top.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity

from bench.workflows import FLOOR_STATEMENT
from core.db import transaction

CREATE_TABLE = (
    "CREATE TABLE IF NOT EXISTS bench_floor_writes ("
    " id bigserial PRIMARY KEY, workflow_id text NOT NULL, payload jsonb NOT NULL,"
    " written_at timestamptz NOT NULL DEFAULT now())"
)


class FloorStatements:
    """Commits one INSERT per step, a row like the product's run events (an id, a small JSON payload, a time)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def create_table(self) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(text(CREATE_TABLE))

    @activity.defn(name=FLOOR_STATEMENT)
    async def floor_statement(self, workflow_id: str) -> None:
        async with transaction(self.sessions) as session:
            await session.execute(
                text("INSERT INTO bench_floor_writes (workflow_id, payload) VALUES (:id, CAST(:payload AS jsonb))"),
                {"id": workflow_id, "payload": '{"kind": "floor", "progress": null}'},
            )
