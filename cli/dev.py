"""`imagejobs dev`: the whole stack on one machine, each part a supervised child, until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from cli.client import DEFAULT_API_URL, EXIT_FAILED, EXIT_OK
from cli.processes import configure_process_logging
from cli.progress import say

if TYPE_CHECKING:
    from cli.devstack import RestartingChild, TemporalDevServer


def run_dev(args: argparse.Namespace) -> int:
    from cli.devstack import DevStackError, ensure_port_free

    configure_process_logging()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt_once)
    try:
        ensure_port_free(args.port, "API, --port")
        with ExitStack() as stack:
            _run_dev_stack(args, stack)
    except DevStackError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130  # interrupted while starting; everything started so far has been stopped
    return EXIT_OK


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    """Turn the first SIGINT or SIGTERM into KeyboardInterrupt, and ignore the rest while we shut down.

    Every stop in the shutdown has its own time limit, so impatience cannot leave children behind.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _run_dev_stack(args: argparse.Namespace, stack: ExitStack) -> None:
    """Start every part, each registered on `stack`, which stops them in reverse order: API and worker first."""
    from cli.devstack import (
        LOOPBACK,
        prepare_temporal,
        start_embedded_postgres,
        start_temporal_dev_server,
        wait_for_port,
    )
    from core.config import Settings
    from core.db import run_migrations
    from core.worker_metrics import free_loopback_port

    settings = Settings()
    data_dir = Path(args.data_dir or settings.DATA_DIR).resolve()
    api_url = f"http://{LOOPBACK}:{args.port}"

    say(f"Starting Temporal (data in {data_dir}) ...")
    temporal = start_temporal_dev_server(
        data_dir, port=args.temporal_port, ui_port=args.ui_port, namespace=settings.TEMPORAL_NAMESPACE
    )
    stack.callback(temporal.stop)
    asyncio.run(prepare_temporal(temporal.address, settings.TEMPORAL_NAMESPACE))

    if settings.DATABASE_URL:
        database_url, database_note = settings.DATABASE_URL, "DATABASE_URL from the environment"
    else:
        say("Starting PostgreSQL ...")
        postgres = start_embedded_postgres(data_dir)
        stack.callback(postgres.stop)
        database_url, database_note = postgres.database_url, f"embedded, data in {data_dir / 'pg'}"

    say("Applying database migrations ...")
    run_migrations(database_url)
    metrics_port = settings.WORKER_METRICS_PORT or free_loopback_port()

    environment = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "TEMPORAL_ADDRESS": temporal.address,
        "APP_URL": settings.APP_URL or api_url,
        **({"TEMPORAL_UI_URL": temporal.ui_url} if temporal.ui_url else {}),
        # Refinement on the dev stack starts from images the API serves on this machine: let the worker fetch
        # from loopback (nowhere else private), unless DOWNLOAD_ALLOWLIST says otherwise.
        "DOWNLOAD_ALLOWLIST": os.environ.get("DOWNLOAD_ALLOWLIST") or LOOPBACK,
        # Likewise for webhook endpoints: an app developed beside the stack listens on loopback.
        "OUTBOUND_ALLOWLIST": os.environ.get("OUTBOUND_ALLOWLIST") or LOOPBACK,
        "WORKER_METRICS_HOST": LOOPBACK,
        "WORKER_METRICS_PORT": str(metrics_port),
    }
    worker = _restarting("worker", ["worker"], environment)
    stack.callback(worker.stop)
    api = _restarting("API", ["api", "--host", LOOPBACK, "--port", str(args.port)], environment)
    stack.callback(api.stop)
    # uvicorn binds its socket only after the app's startup, so an open port means a ready API.
    wait_for_port(LOOPBACK, args.port, api.process, timeout=60.0)

    metrics_urls = f"{api_url}/metrics (API), http://{LOOPBACK}:{metrics_port}/metrics (worker)"
    _print_banner(api_url=api_url, temporal=temporal, database=database_note, data_dir=data_dir, metrics=metrics_urls)
    try:
        _supervise([api, worker])
    except KeyboardInterrupt:
        say("Stopping: API and worker, then PostgreSQL and Temporal ...")


def _restarting(name: str, arguments: list[str], environment: dict[str, str]) -> RestartingChild:
    """Run another `imagejobs` command as a child, started again whenever it dies; it shares our terminal, so
    Ctrl-C reaches it directly too."""
    from cli.devstack import RestartingChild

    command = [sys.executable, "-m", "cli", *arguments]
    return RestartingChild(name, lambda: subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL))


def _supervise(children: list[RestartingChild]) -> None:
    """Wait for Ctrl-C; a child that dies on its own is restarted (logged, with backoff), the rest keep running."""
    while True:
        for child in children:
            child.check()
        time.sleep(0.2)


def _print_banner(*, api_url: str, temporal: TemporalDevServer, database: str, data_dir: Path, metrics: str) -> None:
    try_command = 'imagejobs generate "a lighthouse at dusk"'
    if api_url != DEFAULT_API_URL:
        try_command += f" --api {api_url}"
    lines = [
        "",
        "imagejobs dev is running",
        f"  Canvas        {api_url}/",
        f"  API           {api_url}",
        f"  API docs      {api_url}/docs",
        f"  Temporal UI   {temporal.ui_url or 'off'}",
        f"  Temporal      {temporal.address}  (log: {temporal.log_path})",
        f"  PostgreSQL    {database}",
        f"  Files         {data_dir / 'files'} (unless S3_BUCKET is set)",
        f"  Metrics       {metrics}",
        "",
        f"Try:  {try_command}",
        "Press Ctrl-C to stop.",
        "",
    ]
    print("\n".join(lines), flush=True)
