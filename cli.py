"""`imagejobs`: run the whole stack on one machine, run its production processes, start and follow image jobs.

    imagejobs dev                          embedded Temporal + PostgreSQL, migrations, worker and API until Ctrl-C
    imagejobs generate "a lighthouse"      start a job through the API, show its progress, print the image URL
    imagejobs watch <jobId>                follow a job that is already running
    imagejobs api | worker | migrate       the production processes (settings come from the environment)

Commands import the application lazily, so `generate` and `watch` start in a blink and need only httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

import httpx

if TYPE_CHECKING:
    from core.devstack import RestartingChild, TemporalDevServer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_CANVAS_ID = "cli-canvas"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
POLL_INTERVAL_SECONDS = 0.5
# Open SSE streams would otherwise hold a stopping API process for as long as clients stay connected.
API_GRACEFUL_SHUTDOWN_SECONDS = 5

EXIT_CODES_HELP = "exit codes: 0 completed, 1 the job failed or was cancelled, 2 bad usage or the API is unreachable"


# --- talking to the API ----------------------------------------------------------------------------------------------


class ApiError(Exception):
    """The API refused a call (its JSON error carries `code` and `message`) or could not be reached (no status)."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            code = body.get("code") or f"http_{response.status_code}"
            message = body.get("message") or body.get("detail") or response.reason_phrase
        else:
            code, message = f"http_{response.status_code}", response.text.strip() or response.reason_phrase
        return cls(str(code), str(message), response.status_code)

    @property
    def exit_code(self) -> int:
        """The caller's mistakes (4xx) and an unreachable API are usage errors; the server's own failures are not."""
        return EXIT_FAILED if self.status is not None and self.status >= 500 else EXIT_USAGE


class EventsUnavailable(Exception):
    """The API offers no event stream for this job; the caller polls instead."""


class JobsApi:
    """The few calls the CLI makes to the jobs API, over one pooled HTTP client."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # The read timeout bounds the wait between SSE keep-alives, not a whole job.
        timeout = httpx.Timeout(10.0, read=60.0)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> JobsApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def start_job(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/jobs", json=request)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{quote(job_id, safe='')}")

    def typical_seconds(self, provider: str, model: str) -> float | None:
        """How long this provider and model's jobs took today (the median of GET /v1/stats), when known."""
        try:
            rows = self._call("GET", "/v1/stats").get("providers") or []
        except ApiError:
            return None  # a courtesy: the job is followed without it
        for row in rows:
            if (row.get("provider"), row.get("model")) == (provider, model) and row.get("p50Seconds") is not None:
                return float(row["p50Seconds"])
        return None

    def job_events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's SSE events as JSON objects, until the server ends the stream."""
        path = f"/v1/jobs/{quote(job_id, safe='')}/events"
        with self._http.stream("GET", path, headers={"Accept": "text/event-stream"}) as response:
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200 or not content_type.startswith("text/event-stream"):
                raise EventsUnavailable(f"{path} answered {response.status_code} {content_type}")
            yield from parse_sse(response.iter_lines())

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ApiError(
                "api_unreachable",
                f"cannot reach the API at {self.base_url} ({error or type(error).__name__}); "
                "is `imagejobs dev` running? Use --api for another address",
            ) from error
        if response.is_error:
            raise ApiError.from_response(response)
        body = response.json()
        if not isinstance(body, dict):
            raise ApiError("unexpected_response", f"{method} {path} answered {body!r}", response.status_code)
        return body


def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Decode a text/event-stream into the JSON objects its events carry in `data`.

    Comments (keep-alives) and the `event`, `id` and `retry` fields are not needed to follow a job.
    """
    data: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            try:
                event = json.loads("\n".join(data))
            except ValueError:
                event = None
            data = []
            if isinstance(event, dict):
                yield event


# --- following a job -------------------------------------------------------------------------------------------------


class ProgressDisplay:
    """A job's progress on stderr: one bar redrawn in place on a terminal, a plain line per change otherwise."""

    BAR_WIDTH = 30
    TICK_SECONDS = 1.0

    def __init__(self, job_id: str, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._interactive = self._stream.isatty()
        self._job_id = job_id
        self._started = time.monotonic()
        self._status = "pending"
        self._progress: float | None = None
        self._last_line: str | None = None
        self._drawing = threading.Lock()
        self.typical: float | None = None  # seconds this provider and model usually take

    @contextmanager
    def ticking(self) -> Iterator[None]:
        """Meanwhile, on a terminal, redraw every second, so the elapsed time moves between the job's events (a
        provider may report nothing for a minute)."""
        if not self._interactive:
            yield
            return
        stop = threading.Event()

        def tick() -> None:
            while not stop.wait(self.TICK_SECONDS):
                with self._drawing:
                    self._draw()

        ticker = threading.Thread(target=tick, name="progress-clock", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()

    def show(self, update: dict[str, Any]) -> None:
        """Take the `status` and `progress` of a job record or event (either may be missing) and redraw."""
        with self._drawing:
            self._take(update)
            self._draw()

    def _take(self, update: dict[str, Any]) -> None:
        status = update.get("status")
        if isinstance(status, str):
            self._status = status
        progress = update.get("progress")
        if isinstance(progress, int | float) and not isinstance(progress, bool):
            self._progress = min(max(float(progress), 0.0), 100.0)  # percent, as the API reports it
        if self._status == "completed":
            self._progress = 100.0

    def say(self, message: str) -> None:
        """A line of its own above the bar (a retry: "Attempt 1 of 3 failed: ...; trying again.")."""
        with self._drawing:
            prefix = "\r\x1b[K" if self._interactive and self._last_line is not None else ""
            self._stream.write(f"{prefix}{self._job_id}  {message}\n")
            self._stream.flush()
            if self._interactive and self._last_line is not None:
                self._draw()

    def finish(self) -> None:
        """End the in-place line so that what follows starts on a fresh one."""
        if self._interactive and self._last_line is not None:
            self._stream.write("\n")
            self._stream.flush()
            self._last_line = None

    def _draw(self) -> None:
        percent = "  --" if self._progress is None else f"{self._progress:3.0f}%"
        if not self._interactive:
            line = f"{self._job_id}  {self._status}  {percent.strip()}"
            if line != self._last_line:
                self._stream.write(line + "\n")
                self._stream.flush()
                self._last_line = line
            return
        filled = round((self._progress or 0.0) / 100 * self.BAR_WIDTH)
        bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
        elapsed = time.monotonic() - self._started
        usually = f" (usually ~{max(1, round(self.typical))}s)" if self.typical is not None else ""
        self._last_line = f"{self._job_id}  [{bar}] {percent}  {self._status:<9}  {elapsed:5.1f}s{usually}"
        # Carriage return and erase-to-end-of-line redraw the same terminal line.
        self._stream.write(f"\r{self._last_line}\x1b[K")
        self._stream.flush()


def follow_job(api: JobsApi, job_id: str, display: ProgressDisplay) -> dict[str, Any]:
    """Follow a job until it ends, over its SSE stream while the API offers one, polling otherwise.

    Returns the final job record, always read with a GET so the result does not depend on the event shape.
    """
    record = api.get_job(job_id)
    display.show(record)
    if record.get("status") in TERMINAL_STATUSES:
        return record
    display.typical = api.typical_seconds(str(record.get("provider")), str(record.get("model")))
    with display.ticking():
        return _follow_until_ended(api, job_id, display)


def _follow_until_ended(api: JobsApi, job_id: str, display: ProgressDisplay) -> dict[str, Any]:
    try:
        for event in api.job_events(job_id):
            if event.get("kind") == "log" and (event.get("data") or {}).get("moment") == "retry":
                display.say(str(event.get("message")))
            display.show(event)
            if event.get("status") in TERMINAL_STATUSES:
                break
    except (EventsUnavailable, httpx.HTTPError):
        pass  # no stream, or it broke off: polling below finishes the job either way
    while True:
        record = api.get_job(job_id)
        display.show(record)
        if record.get("status") in TERMINAL_STATUSES:
            return record
        time.sleep(POLL_INTERVAL_SECONDS)


def report_outcome(record: dict[str, Any]) -> int:
    """Print the image URLs of a completed job on stdout, or why it did not complete on stderr."""
    status = record.get("status")
    if status == "completed":
        urls = record.get("imageUrls") or ([record["imageUrl"]] if record.get("imageUrl") else [])
        for url in urls:
            print(url)
        return EXIT_OK
    code = record.get("errorCode") or status
    message = record.get("error") or f"the job ended {status}"
    print(f"error: {code}: {message}", file=sys.stderr)
    return EXIT_FAILED


def _follow_and_report(api: JobsApi, job_id: str) -> int:
    display = ProgressDisplay(job_id)
    try:
        record = follow_job(api, job_id, display)
    except KeyboardInterrupt:
        display.finish()
        print(f"stopped following; the job goes on (imagejobs watch {job_id})", file=sys.stderr)
        return 130
    display.finish()
    return report_outcome(record)


def job_request(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/jobs body for `imagejobs generate`; options left out are left to the API's defaults."""
    spec = {
        "basePrompt": args.prompt,
        "styleModifiers": args.style or None,
        "negativePrompt": args.negative_prompt,
        "size": args.size,
        "aspectRatio": args.aspect_ratio,
        "n": args.n,
        "seed": args.seed,
        "previousImage": args.previous_image,
        "strength": args.strength,
    }
    request = {
        "workflowId": args.canvas,
        "nodeId": args.node or f"node-{uuid.uuid4().hex[:8]}",
        "provider": args.provider,
        "model": args.model,
        "promptSpec": {key: value for key, value in spec.items() if value is not None},
    }
    return {key: value for key, value in request.items() if value is not None}


def _generate(args: argparse.Namespace) -> int:
    with JobsApi(args.api, args.api_key) as api:
        try:
            record = api.start_job(job_request(args))
            return _follow_and_report(api, str(record["jobId"]))
        except ApiError as error:
            return _report_api_error(error)


def _watch(args: argparse.Namespace) -> int:
    with JobsApi(args.api, args.api_key) as api:
        try:
            return _follow_and_report(api, args.job_id)
        except ApiError as error:
            return _report_api_error(error)


def _report_api_error(error: ApiError) -> int:
    print(f"error: {error.code}: {error.message}", file=sys.stderr)
    return error.exit_code


# --- production processes --------------------------------------------------------------------------------------------


def _configure_logging() -> None:
    """LOG_FORMAT and LOG_LEVEL, read from the environment as the settings read them."""
    from core.config import get_settings
    from core.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import KEEP_ALIVE_SECONDS

    _configure_logging()
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


def _vocabulary(args: argparse.Namespace) -> int:
    from api.web_vocabulary import typescript_module

    return _write(typescript_module(), args.output)


def _openapi(args: argparse.Namespace) -> int:
    from api.main import openapi_document

    return _write(openapi_document(), args.output)


def _write(document: str, output: Path | None) -> int:
    """A generated file to `output`, or to standard output."""
    if output:
        output.write_text(document)
    else:
        sys.stdout.write(document)
    return EXIT_OK


def _worker(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from worker import run_worker

    _configure_logging()
    asyncio.run(run_until_signalled(run_worker(get_settings())))
    return EXIT_OK


def _providers_check(args: argparse.Namespace) -> int:
    """Each configured provider's key and model list beside the catalog; needs only the provider settings."""
    from core.config import get_settings
    from providers import check
    from providers.discovery import build_directory
    from providers.registry import build_providers

    async def run() -> int:
        settings = get_settings()
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
            checks = await check.check_providers(build_providers(settings, http), build_directory(settings))
        sys.stdout.write(check.render(checks))
        return check.exit_code(checks)

    return asyncio.run(run())


def _providers_table(args: argparse.Namespace) -> int:
    """The README's model table from the catalog: printed, or written into the file's marked section."""
    from providers import catalog_docs
    from providers.catalog import CATALOG, utc_today

    if args.write:
        changed = catalog_docs.write_table(args.write, CATALOG, utc_today())
        _say(f"{args.write}: {'model table rewritten' if changed else 'model table already current'}")
    else:
        sys.stdout.write(catalog_docs.markdown_table(CATALOG, utc_today()) + "\n")
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


def _migrate(args: argparse.Namespace) -> int:
    from core.config import get_settings
    from core.db import run_migrations

    _configure_logging()
    try:
        database_url = get_settings().require_database_url()
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    run_migrations(database_url)
    return EXIT_OK


# --- the embedded stack ----------------------------------------------------------------------------------------------


def _dev(args: argparse.Namespace) -> int:
    from core.devstack import DevStackError, ensure_port_free

    _configure_logging()
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
    from core.config import Settings
    from core.db import run_migrations
    from core.devstack import (
        LOOPBACK,
        prepare_temporal,
        start_embedded_postgres,
        start_temporal_dev_server,
        wait_for_port,
    )
    from core.worker_metrics import free_loopback_port

    settings = Settings()
    data_dir = Path(args.data_dir or settings.DATA_DIR).resolve()
    api_url = f"http://{LOOPBACK}:{args.port}"

    _say(f"Starting Temporal (data in {data_dir}) ...")
    temporal = start_temporal_dev_server(
        data_dir, port=args.temporal_port, ui_port=args.ui_port, namespace=settings.TEMPORAL_NAMESPACE
    )
    stack.callback(temporal.stop)
    asyncio.run(prepare_temporal(temporal.address, settings.TEMPORAL_NAMESPACE))

    if settings.DATABASE_URL:
        database_url, database_note = settings.DATABASE_URL, "DATABASE_URL from the environment"
    else:
        _say("Starting PostgreSQL ...")
        postgres = start_embedded_postgres(data_dir)
        stack.callback(postgres.stop)
        database_url, database_note = postgres.database_url, f"embedded, data in {data_dir / 'pg'}"

    _say("Applying database migrations ...")
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
        _say("Stopping: API and worker, then PostgreSQL and Temporal ...")


def _restarting(name: str, arguments: list[str], environment: dict[str, str]) -> RestartingChild:
    """Run another `imagejobs` command as a child, started again whenever it dies; it shares our terminal, so
    Ctrl-C reaches it directly too."""
    from core.devstack import RestartingChild

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


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- command line ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagejobs",
        description="Durable AI image generation jobs for canvas apps, orchestrated by Temporal.",
        epilog=EXIT_CODES_HELP,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole stack on this machine until Ctrl-C")
    dev.add_argument("--port", type=int, default=8000, help="API port (default: %(default)s)")
    dev.add_argument("--temporal-port", type=int, default=7233, help="Temporal gRPC port (default: %(default)s)")
    dev.add_argument("--ui-port", type=int, default=8233, help="Temporal Web UI port (default: %(default)s)")
    dev.add_argument("--data-dir", type=Path, help="where all state is kept (default: DATA_DIR, else .data)")
    dev.set_defaults(handler=_dev)

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument(
        "--api",
        default=os.environ.get("IMAGEJOBS_API_URL", DEFAULT_API_URL),
        help="API base URL (default: IMAGEJOBS_API_URL, else %(default)s)",
    )
    client.add_argument(
        "--api-key", default=os.environ.get("IMAGEJOBS_API_KEY"), help="API key (default: IMAGEJOBS_API_KEY)"
    )

    generate = commands.add_parser(
        "generate", parents=[client], help="start an image job and follow it to the end", epilog=EXIT_CODES_HELP
    )
    generate.add_argument("prompt", help="what to draw")
    generate.add_argument("--provider", default="local", help="image provider (default: %(default)s)")
    generate.add_argument("--model", help="the provider's model (default: the provider's default)")
    generate.add_argument("--size", help="WIDTHxHEIGHT, e.g. 1024x1024")
    generate.add_argument("--aspect-ratio", help="e.g. 16:9 (instead of --size)")
    generate.add_argument("-n", "--n", type=int, help="number of images")
    generate.add_argument("--seed", type=int, help="seed, for repeatable images where the provider supports it")
    generate.add_argument("--negative-prompt", help="what to keep out of the image")
    generate.add_argument(
        "--previous-image", metavar="URL", help="an image to refine or start from (image-to-image, upscaling)"
    )
    generate.add_argument("--strength", type=float, help="with --previous-image: 0 keeps it, 1 ignores it")
    generate.add_argument(
        "--style", action="append", metavar="MODIFIER", help="a style modifier (repeat for several), e.g. watercolor"
    )
    generate.add_argument("--canvas", default=DEFAULT_CANVAS_ID, help="canvas (workflowId) (default: %(default)s)")
    generate.add_argument("--node", help="canvas node id (default: a new node-<id>)")
    generate.set_defaults(handler=_generate)

    watch = commands.add_parser("watch", parents=[client], help="follow a job to its end", epilog=EXIT_CODES_HELP)
    watch.add_argument("job_id", metavar="jobId")
    watch.set_defaults(handler=_watch)

    api = commands.add_parser("api", help="serve the HTTP API (settings from the environment)")
    api.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    api.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    api.set_defaults(handler=_api)

    openapi = commands.add_parser("openapi", help="write the API's OpenAPI schema (the canvas' types come from it)")
    openapi.add_argument("--output", type=Path, help="file to write (default: standard output)")
    openapi.set_defaults(handler=_openapi)
    vocabulary = commands.add_parser("vocabulary", help="write the words the canvas shares with the API (TypeScript)")
    vocabulary.add_argument("--output", type=Path, help="file to write (default: standard output)")
    vocabulary.set_defaults(handler=_vocabulary)

    worker = commands.add_parser("worker", help="run a Temporal worker (settings from the environment)")
    worker.set_defaults(handler=_worker)

    migrate = commands.add_parser("migrate", help="apply the database migrations to DATABASE_URL")
    migrate.set_defaults(handler=_migrate)

    providers = commands.add_parser("providers", help="the providers' keys and the model catalog")
    provider_commands = providers.add_subparsers(dest="providers_command", required=True, metavar="COMMAND")
    provider_check = provider_commands.add_parser(
        "check",
        help="check each configured key with one cheap call and list its models beside the catalog "
        "(exit 1: a key was refused; 2: a provider could not be reached)",
    )
    provider_check.set_defaults(handler=_providers_check)
    table = provider_commands.add_parser("table", help="the README's model table, from the catalog")
    table.add_argument("--write", type=Path, metavar="FILE", help="rewrite the marked section of FILE")
    table.set_defaults(handler=_providers_table)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `imagejobs` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
