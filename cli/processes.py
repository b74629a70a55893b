"""The production processes: the HTTP API, a worker and the migrations, with settings from the environment."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from cli.client import EXIT_OK, EXIT_USAGE

API_GRACEFUL_SHUTDOWN_SECONDS = 5


def configure_process_logging() -> None:
    """LOG_FORMAT and LOG_LEVEL, read from the environment as the settings read them."""
    from core.config import get_settings
    from core.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)


def run_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import KEEP_ALIVE_SECONDS

    configure_process_logging()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,  # our handler (LOG_FORMAT) prints uvicorn's lines too
        timeout_graceful_shutdown=API_GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return EXIT_OK


def run_worker_process(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from worker import run_worker

    configure_process_logging()
    asyncio.run(run_until_signalled(run_worker(get_settings())))
    return EXIT_OK


async def run_until_signalled(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` until SIGINT or SIGTERM, then cancel it once and wait while it shuts down gracefully."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if not stopping:  # a second signal must not cut the graceful shutdown short
            stopping = True
            task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        await task
    except asyncio.CancelledError:
        if not stopping:
            raise


def apply_migrations(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from core.db import run_migrations

    configure_process_logging()
    try:
        database_url = get_settings().require_database_url()
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    run_migrations(database_url)
    return EXIT_OK
