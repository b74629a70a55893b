"""Discovery: which models each provider serves today, read when a process starts and every few hours.

One process asks a provider when the shared list (store/model_lists.py) is older than the interval; every process
then learns the lists from PostgreSQL. A provider that cannot be asked (down, no key) changes nothing: jobs keep
being checked against the catalog alone and the last list known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import Settings
from core.db import transaction
from models.errors import ProviderError
from providers.base import ImageProvider
from providers.catalog import CATALOG, Catalog, ModelDirectory
from store import model_lists

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 15.0


def build_directory(settings: Settings) -> ModelDirectory:
    """The shipped catalog (with the operator's own file, when there is one) and aliases."""
    catalog = Catalog.load(settings.MODEL_CATALOG_FILE) if settings.MODEL_CATALOG_FILE else CATALOG
    return ModelDirectory(catalog, settings.model_aliases)


def listing(providers: Mapping[str, ImageProvider]) -> list[ImageProvider]:
    """The enabled providers that can say which models they serve."""
    return [p for p in providers.values() if p.lists_models and p.disabled_reason() is None]


async def refresh(
    directory: ModelDirectory,
    providers: Mapping[str, ImageProvider],
    sessions: async_sessionmaker[AsyncSession],
    *,
    max_age: timedelta,
) -> None:
    """Ask each listing provider whose shared list is older than `max_age`, then learn every shared list."""
    async with sessions() as session:
        known = await model_lists.read_all(session)
    now = datetime.now(UTC)
    for provider in listing(providers):
        listed_at = known.get(provider.name, ([], None))[1]
        if listed_at is not None and now - listed_at < max_age:
            continue
        try:
            models = await provider.list_models()
        except (ProviderError, OSError) as error:
            log.warning("could not list %s's models; the catalog alone decides: %s", provider.name, error)
            continue
        async with transaction(sessions) as session:
            await model_lists.store(session, provider=provider.name, models=models)
        known[provider.name] = (models, now)
    for name, (models, _) in known.items():
        directory.learn(name, models)
    for provider in listing(providers):
        if missing := directory.missing(provider.name):
            log.warning("%s no longer lists catalog models: %s", provider.name, ", ".join(missing))


async def discover_at_start(
    directory: ModelDirectory,
    providers: Mapping[str, ImageProvider],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    """One `refresh` as the process starts, bounded so a slow provider cannot hold the start up."""
    await _refresh_or_log(directory, providers, sessions, settings, timeout=START_TIMEOUT_SECONDS)


async def keep_discovering(
    directory: ModelDirectory,
    providers: Mapping[str, ImageProvider],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    """`refresh` every MODEL_DISCOVERY_INTERVAL_SECONDS until cancelled (0: never; the catalog alone decides)."""
    while settings.MODEL_DISCOVERY_INTERVAL_SECONDS > 0:
        await asyncio.sleep(settings.MODEL_DISCOVERY_INTERVAL_SECONDS)
        await _refresh_or_log(directory, providers, sessions, settings, timeout=None)


async def _refresh_or_log(
    directory: ModelDirectory,
    providers: Mapping[str, ImageProvider],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    timeout: float | None,
) -> None:
    """A `refresh` whose failure (a provider too slow, the database coming up) is logged: discovery tries again
    later and never stops a process or a job."""
    interval = settings.MODEL_DISCOVERY_INTERVAL_SECONDS
    if interval <= 0:
        return
    try:
        await asyncio.wait_for(refresh(directory, providers, sessions, max_age=timedelta(seconds=interval)), timeout)
    except TimeoutError:
        log.warning("model discovery did not finish within %s s; it goes on later", timeout)
    except Exception:
        log.exception("model discovery failed; trying again later")
