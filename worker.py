"""The Temporal worker process: the job workflow, run bookkeeping, and one rate-limited queue per provider.

Only this module wires clients into activity classes (STYLE rule 2). Start it with `imagejobs worker`;
run as many as you like on any number of machines pointed at the same Temporal cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.generation import GenerationActivities
from activities.runs import RunActivities
from core.config import Settings, get_settings
from core.db import create_engine, session_factory
from core.pacing import ProviderPacer
from core.storage import ObjectStorage, build_storage
from core.temporal import connect, ensure_search_attributes
from providers.base import ImageProvider
from providers.registry import build_providers
from workflows.image_job import ImageJobWorkflow, provider_task_queue
from workflows.policies import HEARTBEAT_EVERY

log = logging.getLogger(__name__)


@dataclass
class WorkerResources:
    """Long-lived clients shared by every activity of the process."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    storage: ObjectStorage
    http: httpx.AsyncClient
    providers: dict[str, ImageProvider]


def provider_http_client(settings: Settings) -> httpx.AsyncClient:
    """One pooled client for every provider call and result download (redirects are checked by ingest)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.PROVIDER_TIMEOUT_SECONDS, connect=10.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        follow_redirects=False,
    )


@asynccontextmanager
async def worker_resources(settings: Settings) -> AsyncIterator[WorkerResources]:
    engine = create_engine(settings)
    storage = build_storage(settings)
    http = provider_http_client(settings)
    try:
        yield WorkerResources(
            engine=engine,
            sessions=session_factory(engine),
            storage=storage,
            http=http,
            providers=build_providers(settings, http),
        )
    finally:
        await http.aclose()
        await storage.aclose()
        await engine.dispose()


def build_workers(client: Client, settings: Settings, resources: WorkerResources) -> list[Worker]:
    """The main queue (workflows and database steps) plus one queue per enabled provider."""
    runs = RunActivities(resources.sessions)
    generation = GenerationActivities(
        providers=resources.providers,
        storage=resources.storage,
        http=resources.http,
        sessions=resources.sessions,
        settings=settings,
        pacer=ProviderPacer(resources.sessions),
    )
    workers = [
        Worker(
            client,
            task_queue=settings.TASK_QUEUE,
            workflows=[ImageJobWorkflow],
            activities=[
                runs.create_run,
                runs.mark_running,
                runs.attach_provider_job,
                runs.record_progress,
                runs.update_node,
                runs.complete_run,
                runs.fail_run,
                runs.cancel_run,
            ],
        )
    ]
    for name, provider in resources.providers.items():
        reason = provider.disabled_reason()
        if reason:
            log.info("provider %s disabled: %s", name, reason)
            continue
        rate = provider.rate_limit_per_minute()
        workers.append(
            Worker(
                client,
                task_queue=provider_task_queue(settings.TASK_QUEUE, name),
                activities=[
                    generation.generate_image,
                    generation.submit_job,
                    generation.poll_job,
                    generation.store_outputs,
                    generation.cancel_at_provider,
                ],
                max_task_queue_activities_per_second=rate / 60 if rate else None,
                # A provider job id rides on heartbeats so a retried attempt resumes that job; send them promptly
                # rather than at the default 80 % of the heartbeat timeout.
                max_heartbeat_throttle_interval=HEARTBEAT_EVERY,
            )
        )
    return workers


async def run_worker(settings: Settings) -> None:
    """Connect, register search attributes, and run every worker until cancelled."""
    client = await connect(settings)
    await ensure_search_attributes(client)
    async with worker_resources(settings) as resources:
        workers = build_workers(client, settings, resources)
        log.info("worker polling %s", ", ".join(worker.task_queue for worker in workers))
        await asyncio.gather(*(worker.run() for worker in workers))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_worker(get_settings()))


if __name__ == "__main__":
    main()
