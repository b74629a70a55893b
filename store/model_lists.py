"""The model lists providers publish, as discovery last read them (`provider_model_lists`), shared by the API
processes and the workers so one of them asks each provider and all of them know the answer."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def read_all(session: AsyncSession) -> dict[str, tuple[list[str], datetime]]:
    """provider -> (the ids it listed, when)."""
    rows = await session.execute(text("SELECT provider, models, listed_at FROM provider_model_lists"))
    return {provider: (list(models), listed_at) for provider, models, listed_at in rows}


async def store(session: AsyncSession, *, provider: str, models: list[str]) -> None:
    await session.execute(
        text(
            "INSERT INTO provider_model_lists (provider, models, listed_at) VALUES (:provider, :models, now())"
            " ON CONFLICT (provider) DO UPDATE SET models = EXCLUDED.models, listed_at = EXCLUDED.listed_at"
        ),
        {"provider": provider, "models": sorted(set(models))},
    )
