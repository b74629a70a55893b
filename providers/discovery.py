"""Discovery: which models each provider serves today, read when a process starts and every few hours.

One process asks a provider when the shared list (core/model_lists.py) is older than the interval; every process
then learns the lists from PostgreSQL. A provider that cannot be asked (down, no key) changes nothing: jobs keep
being checked against the catalog alone and the last list known.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core import model_lists
from core.config import Settings
from core.db import transaction
from models.errors import ProviderError
from providers.base import ImageProvider
from providers.catalog import Catalog, ModelDirectory

log = logging.getLogger(__name__)

START_TIMEOUT_SECONDS = 15.0


def build_directory(settings: Settings) -> ModelDirectory:
    """The shipped catalog with the operator's own file and aliases."""
    extra = (settings.MODEL_CATALOG_FILE,) if settings.MODEL_CATALOG_FILE else ()
    return ModelDirectory(Catalog.load(*extra), settings.model_aliases)


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
            await model_lists.store(session, provider.name, models)
    async with sessions() as session:
        for name, (models, _) in (await model_lists.read_all(session)).items():
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
    if settings.MODEL_DISCOVERY_INTERVAL_SECONDS <= 0:
        return
    max_age = timedelta(seconds=settings.MODEL_DISCOVERY_INTERVAL_SECONDS)
    try:
        await asyncio.wait_for(refresh(directory, providers, sessions, max_age=max_age), START_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("model discovery did not finish within %s s at start; it goes on later", START_TIMEOUT_SECONDS)
    except Exception:  # the database may still be coming up; the loop tries again
        log.exception("model discovery failed at start; trying again later")


async def keep_discovering(
    directory: ModelDirectory,
    providers: Mapping[str, ImageProvider],
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    """`refresh` every MODEL_DISCOVERY_INTERVAL_SECONDS until cancelled (0: never; the catalog alone decides)."""
    interval = settings.MODEL_DISCOVERY_INTERVAL_SECONDS
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await refresh(directory, providers, sessions, max_age=timedelta(seconds=interval))
        except Exception:  # a database hiccup must not end discovery for good
            log.exception("model discovery failed; trying again later")
