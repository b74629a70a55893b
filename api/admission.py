"""Admitting a start (a job, a retry, a canvas run) under its tenant's limits: startsPerMinute and the day's
budgets. The TENANT_* settings fill the limits a tenant leaves unset."""

from __future__ import annotations

import math

from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import Caller
from api.deps import AppState
from api.errors import ApiError
from core.config import Settings
from store import tenants
from store.budget import BudgetExceeded, admit, seconds_until_utc_midnight
from store.tenants import TenantLimits


def budgets_for(state: AppState, caller: Caller) -> list[tuple[float, str | None]]:
    """The day's budgets a priced start must fit: the tenant's (its own, else TENANT_BUDGET_USD_PER_DAY) and the
    deployment's (BUDGET_USD_PER_DAY), tenant first, always in this order so two admissions never wait on each
    other's locks."""
    settings = state.settings
    tenant_budget = caller.limits.over(tenant_defaults(settings)).budget_usd_per_day
    budgets: list[tuple[float, str | None]] = []
    if tenant_budget is not None:
        budgets.append((tenant_budget, caller.tenant_id))
    if settings.BUDGET_USD_PER_DAY is not None:
        budgets.append((settings.BUDGET_USD_PER_DAY, None))
    return budgets


async def admit_within_budgets(session: AsyncSession, budgets: list[tuple[float, str | None]], estimate: float) -> None:
    """store/budget.admit for each budget, refusing with 429 `budget_exceeded` until the next UTC midnight."""
    try:
        for budget, tenant_id in budgets:
            await admit(session, estimate=estimate, budget=budget, tenant_id=tenant_id)
    except BudgetExceeded as error:
        retry = {"Retry-After": str(seconds_until_utc_midnight())}
        raise ApiError(429, "budget_exceeded", error.message, headers=retry) from error


def tenant_defaults(settings: Settings) -> TenantLimits:
    return TenantLimits(
        starts_per_minute=settings.TENANT_STARTS_PER_MINUTE,
        max_concurrent_jobs=settings.TENANT_MAX_CONCURRENT_JOBS,
        budget_usd_per_day=settings.TENANT_BUDGET_USD_PER_DAY,
    )


async def admit_start(state: AppState, caller: Caller) -> None:
    """Take one of the tenant's starts (startsPerMinute), or refuse with 429 `rate_limited` and Retry-After."""
    per_minute = caller.limits.over(tenant_defaults(state.settings)).starts_per_minute
    if per_minute is None:
        return
    async with state.autocommit_sessions() as session:
        wait = await tenants.take_start(session, tenant_id=caller.tenant_id, per_minute=per_minute)
    if wait is not None:
        retry_after = max(1, math.ceil(wait))
        message = f"This tenant may start {per_minute} jobs or runs a minute; try again in {retry_after} s."
        raise ApiError(429, "rate_limited", message, headers={"Retry-After": str(retry_after)})
