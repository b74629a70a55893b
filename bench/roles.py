"""The processes the harness starts, one role each, configured by environment variables.

    python -m bench.roles api            the API (uvicorn on APP_URL's port) with the bench providers added
    python -m bench.roles worker         the product's workers (worker.build_workers) with the bench providers
    python -m bench.roles floor-worker   the floor workflows on BENCH_FLOOR_QUEUE (and its `.provider` queue)

Settings come from the environment as they do in production; BENCH_FILES_URL is the harness' file server and
BENCH_READY_FILE is touched once a worker polls. SIGTERM shuts workers down gracefully. Each role imports only
what it runs, so the floor worker's memory holds Temporal and the floor workflows, not the product.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Worker

from bench.workflows import FLOOR_ACTIVITIES, FLOOR_WORKFLOWS
from core.config import Settings
from core.logs import configure_logging
from core.temporal import connect


def floor_provider_queue(floor_queue: str) -> str:
    """The floor's stand-in for a provider's own task queue."""
    return f"{floor_queue}.provider"


def load_settings() -> Settings:
    return Settings(_env_file=None)


def run_api() -> None:
    import uvicorn

    from api.main import KEEP_ALIVE_SECONDS, create_app
    from bench.floors import with_floors
    from bench.providers import bench_providers, with_providers

    settings = load_settings()
    app = with_providers(create_app(settings), bench_providers(settings.WEBHOOK_SECRET, os.environ["BENCH_FILES_URL"]))
    app = with_floors(app)
    port = int(settings.app_url.rsplit(":", 1)[1])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_SECONDS)


async def run_until_terminated(workers: list[Worker]) -> None:
    """Run `workers`, tell the harness they poll, and shut them down gracefully on SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    Path(os.environ["BENCH_READY_FILE"]).touch()
    await stop.wait()
    await asyncio.gather(*(worker.shutdown() for worker in workers))
    await asyncio.gather(*tasks)


async def product_worker() -> None:
    from bench.providers import bench_providers
    from worker import build_workers, connect_worker_client, worker_resources

    settings = load_settings()
    client = await connect_worker_client(settings)
    async with worker_resources(settings) as resources:
        resources.providers.update(bench_providers(settings.WEBHOOK_SECRET, os.environ["BENCH_FILES_URL"]))
        await run_until_terminated(build_workers(client, settings, resources))


async def floor_worker() -> None:
    from bench.floor_statements import FloorStatements
    from core.db import session_factory
    from worker import worker_engine, workflow_runner

    settings = load_settings()
    client: Client = await connect(settings)
    queue = os.environ["BENCH_FLOOR_QUEUE"]
    engine = worker_engine(settings)  # the product worker's pool
    statements = FloorStatements(session_factory(engine))
    await statements.create_table()
    workers = [
        Worker(
            client,
            task_queue=queue,
            workflows=FLOOR_WORKFLOWS,
            workflow_runner=workflow_runner(settings),  # as the product's worker runs its workflows
            activities=[*FLOOR_ACTIVITIES, statements.floor_statement],
        ),
        Worker(client, task_queue=floor_provider_queue(queue), activities=FLOOR_ACTIVITIES),
    ]
    try:
        await run_until_terminated(workers)
    finally:
        await engine.dispose()


ROLES: dict[str, Callable[[], None]] = {
    "api": run_api,
    "worker": lambda: asyncio.run(product_worker()),
    "floor-worker": lambda: asyncio.run(floor_worker()),
}


def main() -> None:
    settings = load_settings()
    configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)
    ROLES[sys.argv[1]]()


if __name__ == "__main__":
    main()
