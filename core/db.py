"""The async SQLAlchemy engine over psycopg 3, sessions, and migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.config import Settings
from core.db_pool import FirstComePool

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def sqlalchemy_url(url: str) -> str:
    """Accept the usual `postgres://` and `postgresql://` forms and pick the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """The same database as a plain libpq URL (for psycopg connections outside SQLAlchemy)."""
    return sqlalchemy_url(url).replace("postgresql+psycopg://", "postgresql://", 1)


def create_engine(settings: Settings, *, pre_ping: bool = True) -> AsyncEngine:
    """One pooled engine per process, whose pool serves whoever waited longest first (core/db_pool.py).

    With `pre_ping`, each checkout first tests its connection (a round trip), so no request fails on a connection
    a database restart left stale. Without it, the first statement on such a connection fails, and SQLAlchemy then
    discards every connection the pool made before it: fine where a failed attempt is retried anyway."""
    return create_async_engine(
        sqlalchemy_url(settings.require_database_url()),
        poolclass=FirstComePool,
        pool_size=settings.DATABASE_POOL_SIZE,
        max_overflow=settings.DATABASE_POOL_SIZE,
        pool_pre_ping=pre_ping,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def autocommit_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for work that is one statement, atomic by itself: each statement commits on its own, so no
    BEGIN and COMMIT round trips surround it. The pool is the engine's."""
    return async_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)


async def lock_until_commit(session: AsyncSession, name: str) -> None:
    """Take the transaction-wide advisory lock called `name` (e.g. `board:<canvas>`): every process that asks for
    the same name waits until this transaction ends."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name})


@asynccontextmanager
async def transaction(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose work commits on success and rolls back on error."""
    async with sessions() as session, session.begin():
        yield session


def run_migrations(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`, the newest by default (idempotent)."""
    from alembic import command
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    command.upgrade(config, revision)
