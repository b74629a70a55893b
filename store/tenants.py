"""Every SQL statement about tenants and their API keys, and the per-tenant start limiter.

Keys are looked up by their SHA-256 on every request (one primary-key read), so a revoked key is refused at once by
every API process: there is no cache to invalidate.

The start limiter is a GCRA (generic cell rate algorithm) kept in one column, `tenants.starts_paced_until`: each
start moves it on by one interval (60 / startsPerMinute seconds) from itself or from now, whichever is later, and a
start that would move it more than a minute ahead of now is refused. So a tenant may burst its whole minute's
starts at once and then one per interval, across all API processes, decided by the database's clock.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from core.db import lock_until_commit
from models.tables import ApiKey, Tenant
from models.tenancy import DEFAULT_TENANT

KEY_PREFIX = "ij_"
SHOWN_PREFIX_CHARS = 10
TENANT_LIST_LIMIT = 500


def new_tenant_id() -> str:
    return "t_" + secrets.token_hex(6)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's limits as they apply now: its own where set, else the deployment's defaults. None: no limit."""

    starts_per_minute: int | None = None
    max_concurrent_jobs: int | None = None
    budget_usd_per_day: float | None = None

    def over(self, defaults: TenantLimits) -> TenantLimits:
        """These limits, with the unset ones taken from `defaults`."""
        own = {field.name: getattr(self, field.name) for field in fields(self)}
        return replace(defaults, **{name: value for name, value in own.items() if value is not None})


async def create_tenant(session: AsyncSession, *, name: str) -> Tenant:
    tenant = Tenant(id=new_tenant_id(), name=name)
    session.add(tenant)
    await session.flush()
    await session.refresh(tenant)
    return tenant


async def get_tenant(session: AsyncSession, *, tenant_id: str) -> Tenant | None:
    return await session.get(Tenant, tenant_id)


async def list_tenants(session: AsyncSession) -> list[Tenant]:
    found = await session.execute(select(Tenant).order_by(col(Tenant.created_at)).limit(TENANT_LIST_LIMIT))
    return list(found.scalars())


@dataclass(frozen=True)
class TenantChange:
    """A PATCH: only the fields named in `given` change (a given None clears a limit back to the default)."""

    given: frozenset[str]
    name: str | None = None
    starts_per_minute: int | None = None
    max_concurrent_jobs: int | None = None
    budget_usd_per_day: float | None = None


async def update_tenant(session: AsyncSession, *, tenant: Tenant, change: TenantChange) -> None:
    for field in change.given:
        setattr(tenant, field, getattr(change, field))
    tenant.updated_at = datetime.now(UTC)
    session.add(tenant)
    await session.flush()
    await session.refresh(tenant)


@dataclass(frozen=True)
class NewKey:
    """A key just made: `key` is shown once and never stored."""

    row: ApiKey
    key: str


async def create_key(session: AsyncSession, *, tenant_id: str, name: str | None) -> NewKey:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(
        id="key_" + secrets.token_hex(8),
        tenant_id=tenant_id,
        name=name,
        prefix=key[:SHOWN_PREFIX_CHARS],
        key_hash=hash_key(key),
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)
    return NewKey(row, key)


async def list_keys(session: AsyncSession, *, tenant_id: str) -> list[ApiKey]:
    found = await session.execute(
        select(ApiKey).where(col(ApiKey.tenant_id) == tenant_id).order_by(col(ApiKey.created_at))
    )
    return list(found.scalars())


async def revoke_key(session: AsyncSession, *, tenant_id: str, key_id: str) -> bool:
    """Revoke the key (keeping its row); False when the tenant has no such key."""
    found = await session.execute(
        text(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())"
            " WHERE id = :id AND tenant_id = :tenant RETURNING id"
        ),
        {"id": key_id, "tenant": tenant_id},
    )
    return found.first() is not None


@dataclass(frozen=True)
class KeyOwner:
    """Who a key belongs to: its id, its tenant, and the tenant's own limits."""

    key_id: str
    tenant_id: str
    limits: TenantLimits


_KEY_OWNER = text(
    "SELECT k.id, t.id, t.starts_per_minute, t.max_concurrent_jobs, t.budget_usd_per_day"
    " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = :hash AND k.revoked_at IS NULL"
)
_TENANT_LIMITS = text("SELECT starts_per_minute, max_concurrent_jobs, budget_usd_per_day FROM tenants WHERE id = :id")


async def key_owner(session: AsyncSession, *, key: str) -> KeyOwner | None:
    """The owner of a valid (not revoked) key, or None."""
    row = (await session.execute(_KEY_OWNER, {"hash": hash_key(key)})).first()
    if row is None:
        return None
    key_id, tenant_id, starts, concurrent, budget = row
    return KeyOwner(key_id, tenant_id, TenantLimits(starts, concurrent, budget))


_LIMITS_WHILE_VALID = text(
    "SELECT t.starts_per_minute, t.max_concurrent_jobs, t.budget_usd_per_day"
    " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
    " WHERE k.id = :id AND k.tenant_id = :tenant AND k.revoked_at IS NULL"
)


async def limits_while_key_valid(session: AsyncSession, *, key_id: str, tenant_id: str) -> TenantLimits | None:
    """The tenant's limits, when its key `key_id` is still valid (one read, for a canvas token); else None."""
    row = (await session.execute(_LIMITS_WHILE_VALID, {"id": key_id, "tenant": tenant_id})).first()
    return TenantLimits(*row) if row else None


async def tenant_limits(session: AsyncSession, *, tenant_id: str = DEFAULT_TENANT) -> TenantLimits:
    row = (await session.execute(_TENANT_LIMITS, {"id": tenant_id})).first()
    return TenantLimits(*row) if row else TenantLimits()


# One statement, atomic under the row lock: moves the tenant's schedule on by one interval unless that would put
# it more than the burst window ahead of now; answers nothing when refused.
_TAKE_START = text(
    """
    UPDATE tenants
       SET starts_paced_until = greatest(clock_timestamp(), coalesce(starts_paced_until, clock_timestamp()))
                                + make_interval(secs => :interval)
     WHERE id = :tenant
       AND greatest(clock_timestamp(), coalesce(starts_paced_until, clock_timestamp()))
           + make_interval(secs => :interval) <= clock_timestamp() + make_interval(secs => :window)
    RETURNING id
    """
)
_NEXT_START_IN = text(
    "SELECT greatest(0, extract(epoch FROM starts_paced_until + make_interval(secs => :interval)"
    " - make_interval(secs => :window) - clock_timestamp()))::float8 FROM tenants WHERE id = :tenant"
)
START_WINDOW_SECONDS = 60.0


async def take_start(session: AsyncSession, *, tenant_id: str, per_minute: int) -> float | None:
    """Take one of the tenant's starts: None when taken, else the seconds until one is free."""
    values = {"tenant": tenant_id, "interval": START_WINDOW_SECONDS / per_minute, "window": START_WINDOW_SECONDS}
    if (await session.execute(_TAKE_START, values)).first() is not None:
        return None
    wait = (await session.execute(_NEXT_START_IN, values)).scalar_one_or_none()
    return float(wait or 0.0)


_TENANT_CAP = text("SELECT max_concurrent_jobs FROM tenants WHERE id = :tenant")
_RUNNING_OTHERS = text("SELECT count(*) FROM runs WHERE tenant_id = :tenant AND status = 'running' AND id <> :job")
# A tenant's line for running slots: its pending jobs that found the cap reached, first come first.
_IN_LINE = "w.status = 'pending' AND w.slot_wait_since IS NOT NULL"
_LINE_ORDER = "w.slot_wait_since, w.id"


async def _cap_of(session: AsyncSession, tenant_id: str, default_cap: int | None) -> int | None:
    """The tenant's maxConcurrentJobs: its own, else `default_cap` (None: no cap)."""
    own = (await session.execute(_TENANT_CAP, {"tenant": tenant_id})).scalar_one_or_none()
    return own if own is not None else default_cap


async def _running(session: AsyncSession, tenant_id: str, *, other_than: str = "") -> int:
    values = {"tenant": tenant_id, "job": other_than}
    return int((await session.execute(_RUNNING_OTHERS, values)).scalar_one())


async def count_in_line(session: AsyncSession, *, tenant_id: str | None = None, canvas_id: str | None = None) -> int:
    """How many jobs wait in line for a running slot: a tenant's (on one canvas), or every tenant's."""
    conditions = [_IN_LINE]
    if tenant_id is not None:
        conditions.append("w.tenant_id = :tenant")
    if canvas_id is not None:
        conditions.append("w.canvas_id = :canvas")
    query = text(f"SELECT count(*) FROM runs w WHERE {' AND '.join(conditions)}")
    return int((await session.execute(query, {"tenant": tenant_id, "canvas": canvas_id})).scalar_one())


# Joining the line shows on the job's node (`waitingForSlot`, while the job still owns it), once: the job's next
# write there (running, or its end) clears it (store/canvas_nodes.py).
_JOIN_SLOT_LINE = text(
    "WITH joined AS ("
    "  UPDATE runs SET slot_wait_since = now() WHERE id = :job AND status = 'pending' AND slot_wait_since IS NULL"
    "  RETURNING id, canvas_id, node_id"
    ") UPDATE workflow_nodes n"
    " SET node_data = n.node_data || jsonb_build_object('waitingForSlot', true, 'updatedAt', now()),"
    "   version = n.version + 1, updated_at = now()"
    " FROM joined WHERE n.canvas_id = joined.canvas_id AND n.id = joined.node_id AND n.owner_job_id = joined.id"
)


async def join_slot_line(session: AsyncSession, *, job_id: str) -> None:
    """Put a job its tenant's cap holds back in the tenant's line (once: a job asking again keeps its place), and
    say so on its node; a job's end wakes the oldest in line (`runs.transition`)."""
    await session.execute(_JOIN_SLOT_LINE, {"job": job_id})


def first_in_line_sql(row: str) -> str:
    """A subquery: the first job in the line of `row`'s tenant (the alias of a row with `id` and `tenant_id`),
    other than that row's own job."""
    return (
        f"(SELECT w.id FROM runs w WHERE w.tenant_id = {row}.tenant_id AND {_IN_LINE} AND w.id <> {row}.id"
        f" ORDER BY {_LINE_ORDER} LIMIT 1)"
    )


_LEAVE_SLOT_LINE = text(
    "WITH gone AS (UPDATE runs SET slot_wait_since = NULL WHERE id = :job RETURNING id, tenant_id)"
    f" SELECT {first_in_line_sql('gone')} FROM gone"
)


async def leave_slot_line(session: AsyncSession, *, job_id: str) -> str | None:
    """Take a job out of its tenant's line (its workflow is gone, so it would take every wake-up); answers the job
    now first in that line, if any."""
    return (await session.execute(_LEAVE_SLOT_LINE, {"job": job_id})).scalar_one_or_none()


_FIRST_IN_LINE = text(
    f"SELECT w.id FROM runs w WHERE w.tenant_id = :tenant AND {_IN_LINE} ORDER BY {_LINE_ORDER} LIMIT :count"
)


async def first_in_line(session: AsyncSession, *, tenant_id: str, default_cap: int | None, most: int) -> list[str]:
    """The first jobs in the tenant's line, as many as it has running slots free (at most `most`)."""
    cap = await _cap_of(session, tenant_id, default_cap)
    free = most if cap is None else min(most, cap - await _running(session, tenant_id))
    if free <= 0:
        return []
    return list((await session.execute(_FIRST_IN_LINE, {"tenant": tenant_id, "count": free})).scalars())


async def running_slot_free(session: AsyncSession, *, tenant_id: str, job_id: str, default_cap: int | None) -> bool:
    """Whether the job may run now under its tenant's maxConcurrentJobs (its own, else `default_cap`).

    With a cap, it takes the tenant's lock for the rest of the transaction, so the caller's move to `running` is
    counted before any other job of the tenant asks; a job already running is never refused its own slot."""
    cap = await _cap_of(session, tenant_id, default_cap)
    if cap is None:
        return True
    await lock_until_commit(session, f"running:{tenant_id}")
    return await _running(session, tenant_id, other_than=job_id) < cap
