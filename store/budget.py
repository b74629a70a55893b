"""Day budgets: a day's spend (UTC) may not pass BUDGET_USD_PER_DAY, nor a tenant's spend its own budget.

The day's spend is what its jobs cost: the settled `cost_usd` of those that ended, and the `estimated_cost_usd`
of those still in flight. A priced job (or canvas run) is admitted under a transaction-wide advisory lock, so two
starts at once cannot both take the last of the budget; free jobs never wait on it. Everything lives in `runs`,
so the spend survives restarts and is the same for every API process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import lock_until_commit

_SPENT_TODAY = (
    "SELECT COALESCE(sum(COALESCE(cost_usd, estimated_cost_usd)), 0) FROM runs"
    " WHERE created_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
)
_TENANT_SPENT_TODAY = text(_SPENT_TODAY + " AND tenant_id = :tenant")
_ALL_SPENT_TODAY = text(_SPENT_TODAY)


class BudgetExceeded(Exception):
    """The estimate would take today's spend over the budget; the message states the budget and the spend."""

    def __init__(self, *, budget: float, spent: float, estimate: float, whose: str) -> None:
        super().__init__(
            f"Today's budget ({whose}) is ${budget:.2f}; ${spent:.4f} is spent or in flight, and this "
            f"would add ${estimate:.4f}. Free providers (local) still run; the budget resets at midnight UTC."
        )
        self.message = str(self)


async def admit(session: AsyncSession, *, estimate: float, budget: float, tenant_id: str | None = None) -> None:
    """Take the budget's lock for this transaction and raise BudgetExceeded unless `estimate` still fits; the
    caller records its jobs in the same transaction, so the next admission sees them. With `tenant_id`, the budget
    is that tenant's (its own lock, its own spend); without, the deployment's."""
    await lock_until_commit(session, "budget" if tenant_id is None else f"budget:{tenant_id}")
    spent = await spent_today(session, tenant_id=tenant_id)
    if spent + estimate > budget:
        whose = "BUDGET_USD_PER_DAY" if tenant_id is None else "the tenant's budgetUsdPerDay"
        raise BudgetExceeded(budget=budget, spent=spent, estimate=estimate, whose=whose)


async def spent_today(session: AsyncSession, *, tenant_id: str | None = None) -> float:
    """USD: the UTC day's ended jobs' costs and in-flight jobs' estimates, of one tenant or of all."""
    if tenant_id is None:
        return float((await session.execute(_ALL_SPENT_TODAY)).scalar_one())
    return float((await session.execute(_TENANT_SPENT_TODAY, {"tenant": tenant_id})).scalar_one())


def seconds_until_utc_midnight(now: datetime | None = None) -> int:
    moment = now or datetime.now(UTC)
    midnight = datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    return max(1, int((midnight - moment).total_seconds()))
