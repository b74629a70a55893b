"""The stack under measurement, started fresh by the harness and torn down after it.

Embedded PostgreSQL (pgserver) and the Temporal dev server run as children of the harness; the API, the
product's worker and the floor's worker are separate Python processes, as they are in production, so no
figure pays for sharing one event loop with the load generator. Result files for the download provider are
served by `python -m http.server`.

    <work>/files/      what the file server serves (PNG files made once per run)
    <work>/storage/    LOCAL_STORAGE_DIR of the product
    <work>/*.log       each child's output
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from bench import procfs
from bench.procfs import Memory
from cli.devstack import find_temporal_binary
from core.config import Settings
from core.db import create_engine, run_migrations, session_factory, sqlalchemy_url
from core.temporal import SEARCH_ATTRIBUTES, dynamic_config_args

PROJECT_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# Long enough that no job polls while the harness holds it waiting: the figures measure webhooks, not polling.
WEBHOOK_GRACE_SECONDS = 3600
POLL_TIMEOUT_SECONDS = 7200


class BenchError(RuntimeError):
    """The stack or a measurement did not behave; the message says what and where to look."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A process the harness started; stopped politely (SIGTERM), killed after a grace period."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def memory(self) -> Memory:
        return procfs.memory(self.pid)

    def reset_peak(self) -> bool:
        return procfs.reset_peak(self.pid)

    def cpu_seconds(self) -> float:
        return procfs.cpu_seconds(self.pid)

    def check_running(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code}; its log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Child:
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            args, cwd=PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    return Child(name=name, popen=popen, log_path=log_path)


def role(name: str, env: dict[str, str], log_dir: Path) -> Child:
    """`python -m bench.roles <name>` (see bench/roles.py)."""
    return spawn(name, [sys.executable, "-m", "bench.roles", name], env, log_dir)


def product_environment(overrides: dict[str, str]) -> dict[str, str]:
    """This process' environment without any product setting of the shell, plus the bench's own."""
    env = {key: value for key, value in os.environ.items() if key not in Settings.model_fields}
    return {**env, "PYTHONUNBUFFERED": "1", **overrides}


@dataclass(frozen=True)
class ResultFiles:
    """The download provider's results: a tiny PNG and two large ones of about `large_bytes` each."""

    directory: Path
    large_bytes: int

    def path(self, model: str) -> Path:
        return self.directory / f"{model}.png"


def write_result_files(directory: Path, large_bytes: int) -> ResultFiles:
    """Noise PNGs stored uncompressed, so the file is as large as the pixels.

    `large-grey` has one byte per pixel, and at 64 MB that is above THUMBNAIL_MAX_PIXELS: only the streaming
    path runs. `large-rgb` has the same bytes in a third of the pixels, so the worker also decodes it for the
    thumbnail, as it would a big photo.
    """
    directory.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (40, 90, 160)).save(directory / "small.png")
    for model, mode, channels in (("large-grey", "L", 1), ("large-rgb", "RGB", 3)):
        side = int((large_bytes / channels) ** 0.5)
        pixels = Image.frombytes(mode, (side, side), os.urandom(side * side * channels))
        buffer = io.BytesIO()
        pixels.save(buffer, format="PNG", compress_level=0)
        (directory / f"{model}.png").write_bytes(buffer.getvalue())
    return ResultFiles(directory=directory, large_bytes=large_bytes)


@dataclass
class BenchStack:
    """Everything a figure needs: the settings the processes share, clients, and how to start workers."""

    work_dir: Path
    env: dict[str, str]
    settings: Settings
    client: Client
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    http: httpx.AsyncClient
    files: ResultFiles
    files_url: str
    api: Child
    postgres_pid: int
    temporal_pid: int | None
    keep_logs: bool = False

    def cpu(self, workers: Workers | None = None) -> dict[str, float]:
        """CPU seconds each part of the stack has used so far (the Temporal server when it was found)."""
        used = {
            "api": self.api.cpu_seconds(),
            "postgres": procfs.tree_cpu_seconds(self.postgres_pid),
            "harness": procfs.cpu_seconds(os.getpid()),
        }
        if self.temporal_pid is not None:
            used["temporal"] = procfs.cpu_seconds(self.temporal_pid)
        if workers is not None and workers.product is not None:
            used["worker"] = workers.product.cpu_seconds()
        if workers is not None and workers.floor is not None:
            used["floor worker"] = workers.floor.cpu_seconds()
        return used

    @asynccontextmanager
    async def workers(self, *, product: bool = True, floor: bool = True, **overrides: str) -> AsyncIterator[Workers]:
        """Fresh worker processes, started side by side: the product's (with these setting overrides) and the
        floor's on a new task queue, each unless switched off. Stopped gracefully on exit."""
        queue = f"floor-{uuid.uuid4().hex[:8]}"
        roles = {"worker": overrides} if product else {}
        if floor:
            roles["floor-worker"] = {"BENCH_FLOOR_QUEUE": queue}
        started: dict[str, tuple[Child, Path]] = {}
        try:
            for name, extra in roles.items():
                ready = self.work_dir / f"{name}-{uuid.uuid4().hex[:6]}.ready"
                env = {**self.env, **extra, "BENCH_READY_FILE": str(ready)}
                started[name] = (role(name, env, self.work_dir), ready)
            for child, ready in started.values():
                await wait_until(ready.exists, child, f"{child.name} to poll")
            processes = {name: child for name, (child, _) in started.items()}
            yield Workers(product=processes.get("worker"), floor=processes.get("floor-worker"), floor_queue=queue)
        finally:
            await asyncio.gather(*(asyncio.to_thread(child.stop) for child, _ in started.values()))


@dataclass(frozen=True)
class Workers:
    """The worker processes of one phase; `floor_queue` is where floor workflows go."""

    product: Child | None
    floor: Child | None
    floor_queue: str

    def product_process(self) -> Child:
        if self.product is None:
            raise BenchError("this phase runs no product worker")
        return self.product

    def floor_process(self) -> Child:
        if self.floor is None:
            raise BenchError("this phase runs no floor worker")
        return self.floor


async def wait_until(condition: Callable[[], bool], child: Child, what: str, timeout: float = READY_TIMEOUT) -> None:
    """Poll `condition` while `child` runs; fail with the child's log when it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        child.check_running()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out waiting for {what}; the log of {child.name} ends:\n{child.log_tail()}")
        await asyncio.sleep(0.05)


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Point this process' stdout and stderr at `path` meanwhile, so a child spawned meanwhile writes there
    (the dev server prints a banner that has no place in the table)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        for target, original in enumerate(saved, start=1):
            os.dup2(original, target)
            os.close(original)


@contextmanager
def embedded_postgres() -> Iterator[tuple[str, int]]:
    """pgserver in a fresh directory directly under the system temp dir (as root, PostgreSQL runs as its own
    user and must be able to reach the directory); yields the database URL and the postmaster's pid."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from pgserver.postgres_server import get_server

    data_dir = Path(tempfile.mkdtemp(prefix="imagejobs-bench-pg-"))
    server = get_server(data_dir, cleanup_mode="stop")
    try:
        pid = server.get_pid()
        if pid is None:
            raise BenchError(f"PostgreSQL in {data_dir} is not running")
        yield sqlalchemy_url(server.get_uri()), pid
    finally:
        server.cleanup()
        shutil.rmtree(data_dir, ignore_errors=True)


@asynccontextmanager
async def file_server(directory: Path, log_dir: Path) -> AsyncIterator[str]:
    port = free_port()
    child = spawn(
        "files",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(directory)],
        product_environment({}),
        log_dir,
    )
    try:
        await wait_until(lambda: port_open(port), child, "the file server")
        yield f"http://127.0.0.1:{port}"
    finally:
        child.stop()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@asynccontextmanager
async def running_api(env: dict[str, str], base_url: str, log_dir: Path) -> AsyncIterator[Child]:
    child = role("api", env, log_dir)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=2) as probe:
            deadline = time.monotonic() + READY_TIMEOUT
            while True:
                child.check_running()
                try:
                    if (await probe.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"the API was not ready in time; its log ends:\n{child.log_tail()}")
                await asyncio.sleep(0.1)
        yield child
    finally:
        await asyncio.to_thread(child.stop)


def shared_environment(
    database_url: str, temporal_address: str, app_url: str, files_url: str, work_dir: Path
) -> dict[str, str]:
    """The settings every product process gets: production defaults except where the bench must differ."""
    return product_environment(
        {
            "DATABASE_URL": database_url,
            "TEMPORAL_ADDRESS": temporal_address,
            "TASK_QUEUE": f"bench-{uuid.uuid4().hex[:8]}",
            "APP_URL": app_url,
            "LOCAL_STORAGE_DIR": str(work_dir / "storage"),
            "LOCAL_PROVIDER_DELAY_MS": "0",
            # Warnings and errors only (figure 10 measures what INFO lines in JSON cost).
            "LOG_LEVEL": "WARNING",
            # The file server is on loopback, which the download guard refuses unless allowed.
            "DOWNLOAD_ALLOWLIST": "127.0.0.1",
            "WEBHOOK_GRACE_SECONDS": str(WEBHOOK_GRACE_SECONDS),
            "POLL_TIMEOUT_SECONDS": str(POLL_TIMEOUT_SECONDS),
            "WEBHOOK_SECRET": "bench-webhook-secret",
            "BENCH_FILES_URL": files_url,
        }
    )


@asynccontextmanager
async def bench_stack(large_result_bytes: int) -> AsyncIterator[BenchStack]:
    """Start everything and tear it all down on exit; the work directory (logs) stays when anything failed."""
    work_dir = Path(tempfile.mkdtemp(prefix="imagejobs-bench-"))
    stack: BenchStack | None = None
    try:
        async with AsyncExitStack() as parts:
            files = write_result_files(work_dir / "files", large_result_bytes)
            database_url, postgres_pid = parts.enter_context(embedded_postgres())
            await asyncio.to_thread(run_migrations, database_url)
            with output_to(work_dir / "temporal.log"):
                environment = await WorkflowEnvironment.start_local(
                    dev_server_existing_path=str(find_temporal_binary()),
                    search_attributes=SEARCH_ATTRIBUTES,
                    dev_server_log_level="error",
                    dev_server_extra_args=dynamic_config_args(),
                )
            parts.push_async_callback(environment.shutdown)
            files_url = await parts.enter_async_context(file_server(files.directory, work_dir))
            app_url = f"http://127.0.0.1:{free_port()}"
            temporal_address = str(environment.client.service_client.config.target_host)
            env = shared_environment(database_url, temporal_address, app_url, files_url, work_dir)
            api = await parts.enter_async_context(running_api(env, app_url, work_dir))
            # The harness' own settings (database, webhook tokens): the processes' values, no .env file.
            values: dict[str, Any] = {name: value for name, value in env.items() if name in Settings.model_fields}
            settings = Settings(_env_file=None, **values)
            engine = create_engine(settings)
            parts.push_async_callback(engine.dispose)
            limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
            http = await parts.enter_async_context(httpx.AsyncClient(base_url=app_url, timeout=60, limits=limits))
            stack = BenchStack(
                work_dir=work_dir,
                env=env,
                settings=settings,
                client=environment.client,
                engine=engine,
                sessions=session_factory(engine),
                http=http,
                files=files,
                files_url=files_url,
                api=api,
                postgres_pid=postgres_pid,
                temporal_pid=procfs.find_process("start-dev", f"--port {temporal_address.rsplit(':', 1)[1]}"),
            )
            yield stack
    except BaseException:
        print(f"the benchmark stack failed; process logs are kept in {work_dir}", file=sys.stderr)
        raise
    else:
        if stack is None or not stack.keep_logs:
            shutil.rmtree(work_dir, ignore_errors=True)
    finally:
        for bulky in ("files", "storage"):
            shutil.rmtree(work_dir / bulky, ignore_errors=True)
