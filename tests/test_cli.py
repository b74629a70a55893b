"""The `imagejobs` CLI and the embedded stack it starts: binaries, Temporal dev server, PostgreSQL, generate/watch."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus

from cli.client import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from cli.devstack import (
    DevStackError,
    EmbeddedPostgres,
    RestartingChild,
    TemporalDevServer,
    ensure_port_free,
    find_temporal_binary,
    find_test_server_binary,
    prepare_temporal,
    start_embedded_postgres,
    start_temporal_dev_server,
)
from cli.main import main as cli_main
from cli.progress import ProgressDisplay
from core.temporal import SEARCH_ATTRIBUTE_NAMES
from tests.fakes.base import record_request
from tests.fakes.server import Recorder, free_port, serve
from tests.helpers import eventually_blocking

# --- the embedded stack ----------------------------------------------------------------------------------------------


def test_packaged_temporal_binaries_are_found_and_run() -> None:
    version = subprocess.run([find_temporal_binary(), "--version"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0
    assert version.stdout.startswith("temporal version")

    # The test server has no --version; without arguments it prints its usage and exits 0.
    usage = subprocess.run([find_test_server_binary()], capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0
    assert "Usage" in usage.stdout + usage.stderr


def test_a_busy_port_is_refused_with_a_clear_message() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(DevStackError, match=f"port {port} \\(Temporal gRPC\\) is already in use"):
            ensure_port_free(port, "Temporal gRPC")


async def test_dev_server_registers_search_attributes_keeps_state_and_stops(tmp_path: Path) -> None:
    server = await _started_dev_server(tmp_path)
    try:
        client = await Client.connect(server.address)
        listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
        for name in SEARCH_ATTRIBUTE_NAMES:
            assert listed.custom_attributes[name] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        # No worker polls this queue, so the workflow simply stays open across the restart.
        await client.start_workflow("NoSuchWorkflow", id="survives-restart", task_queue="nobody-polls-this")
    finally:
        assert server.stop() == 0
    ensure_port_free(int(server.address.rsplit(":", 1)[1]), "Temporal gRPC")  # really gone

    restarted = await _started_dev_server(tmp_path)
    try:
        client = await Client.connect(restarted.address)
        description = await client.get_workflow_handle("survives-restart").describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        await client.get_workflow_handle("survives-restart").terminate()
    finally:
        restarted.stop()
    assert (tmp_path / "temporal.db").is_file()


# A port free_port() found can be taken by another process before the server binds it (the server then dies, while
# the other listener answers the readiness check): each such start is tried again on a new port.
DEV_SERVER_STARTS = 3


async def _started_dev_server(data_dir: Path) -> TemporalDevServer:
    for attempt in range(1, DEV_SERVER_STARTS + 1):
        server = await asyncio.to_thread(
            start_temporal_dev_server, data_dir, port=free_port(), ui_port=None, ready_timeout=30
        )
        try:
            await prepare_temporal(server.address, timeout=30 if attempt == DEV_SERVER_STARTS else 10)
        except DevStackError:
            server.stop()
            if attempt == DEV_SERVER_STARTS:
                raise
            continue
        except BaseException:
            server.stop()
            raise
        return server
    raise AssertionError("unreachable")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data directory PostgreSQL can use: as root, pgserver runs it as its own user, barred from pytest's tmp tree."""
    directory = Path(tempfile.mkdtemp(prefix="imagejobs-test-devstack-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_embedded_postgres_answers_over_libpq_and_sqlalchemy_and_stops(data_dir: Path) -> None:
    postgres: EmbeddedPostgres = start_embedded_postgres(data_dir)
    try:
        with psycopg.connect(postgres.uri) as connection:
            assert connection.execute("select 1").fetchone() == (1,)
        assert postgres.database_url.startswith("postgresql+psycopg://postgres:@/postgres?host=")
        engine = sqlalchemy.create_engine(postgres.database_url)
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("select 1")).scalar_one() == 1
        engine.dispose()
    finally:
        postgres.stop()
    assert (data_dir / "pg" / "PG_VERSION").is_file()  # stopping keeps the data
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.uri, connect_timeout=2)


def test_dev_refuses_a_busy_api_port_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code = cli_main(["dev", "--port", str(port), "--data-dir", str(tmp_path / "data")])
    assert code == EXIT_FAILED
    assert f"port {port} (API, --port) is already in use" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.timeout(180)  # the whole dev stack, twice: ~15 s
def test_dev_serves_jobs_stops_on_ctrl_c_and_restarts_with_all_data(data_dir: Path) -> None:
    """`imagejobs dev` end to end: a generated PNG, a clean Ctrl-C, and the job still there after a restart."""
    ports = {"--port": free_port(), "--temporal-port": free_port(), "--ui-port": free_port()}
    api_url = f"http://127.0.0.1:{ports['--port']}"

    with _running_dev(data_dir, ports) as (banner, dev):
        assert f"API           {api_url}" in banner
        assert f"Temporal UI   http://127.0.0.1:{ports['--ui-port']}" in banner
        # The dev stack heals: a worker killed -9 is restarted, and the next job still completes.
        os.kill(_child_pid(dev.pid, "worker"), signal.SIGKILL)
        _wait_for_text(data_dir / "dev.out", "restarted the worker process (restart 1)")
        generated = _imagejobs("generate", "a lighthouse at dusk", "--size", "320x240", "--api", api_url)
        assert generated.returncode == EXIT_OK, generated.stderr
        image_url = generated.stdout.strip()
        job_id = generated.stderr.split()[0]
        image = Image.open(io.BytesIO(httpx.get(image_url, timeout=10).content))
        assert (image.format, image.size) == ("PNG", (320, 240))
        assert "the worker process exited with code -9; restarting it in 1 s" in (data_dir / "dev.out").read_text()

    for port in ports.values():
        ensure_port_free(port, "released after Ctrl-C")
    assert not (data_dir / "pg" / "postmaster.pid").exists()  # PostgreSQL was stopped, not left running

    with _running_dev(data_dir, ports):
        watched = _imagejobs("watch", job_id, "--api", api_url)
        assert watched.returncode == EXIT_OK, watched.stderr
        assert watched.stdout.strip() == image_url
        assert httpx.get(image_url, timeout=10).status_code == 200


def test_a_child_that_keeps_dying_is_restarted_with_growing_backoff(caplog: pytest.LogCaptureFixture) -> None:
    spawned: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        spawned.append(subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
        return spawned[-1]

    caplog.set_level(logging.WARNING, logger="cli.devstack")
    child = RestartingChild("crasher", spawn)
    spawned[-1].wait()
    now = time.monotonic()
    child.check(now)  # sees the exit: restart in 1 s
    child.check(now + 0.9)
    assert len(spawned) == 1
    child.check(now + 1.0)
    assert (len(spawned), child.restarts) == (2, 1)
    spawned[-1].wait()
    child.check(now + 1.1)  # a second quick crash: 2 s
    child.check(now + 3.0)
    assert len(spawned) == 2
    child.check(now + 3.1)
    assert (len(spawned), child.restarts) == (3, 2)
    child.stop()
    assert "crasher process exited with code 3; restarting it in 1 s" in caplog.text
    assert "crasher process exited with code 3; restarting it in 2 s" in caplog.text


def _child_pid(parent: int, command_word: str) -> int:
    """The pid of `parent`'s child whose command line has `command_word` as an argument (Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            arguments = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == parent and command_word.encode() in arguments:
            return int(stat.parent.name)
    raise AssertionError(f"no {command_word} child of {parent}")


def _wait_for_text(path: Path, text: str, timeout: float = 60) -> None:
    eventually_blocking(lambda: text in path.read_text(), what=f"{text!r} in {path}", timeout=timeout)


@contextmanager
def _running_dev(data_dir: Path, ports: dict[str, int]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Run `imagejobs dev` until the banner shows, yield the banner, then stop it as Ctrl-C in its terminal would."""
    output = data_dir / "dev.out"
    environment = {key: value for key, value in os.environ.items() if key not in DEV_SETTINGS_FROM_THE_TEST_HOST}
    environment["LOCAL_PROVIDER_DELAY_MS"] = "0"
    arguments = [arg for option, port in ports.items() for arg in (option, str(port))]
    with output.open("w") as sink:
        # Its own session stands in for a terminal: the signal below reaches the CLI and its API and worker.
        dev = subprocess.Popen(
            [_imagejobs_script(), "dev", *arguments, "--data-dir", str(data_dir)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=data_dir,  # away from any .env of the checkout
            env=environment,
            start_new_session=True,
        )
    try:

        def banner_shown() -> bool:
            assert dev.poll() is None, output.read_text()
            return "Press Ctrl-C to stop." in output.read_text()

        eventually_blocking(banner_shown, what="the dev stack's banner", timeout=60)
        yield output.read_text(), dev
    finally:
        os.killpg(dev.pid, signal.SIGINT)
        stopped_at = time.monotonic()
        assert dev.wait(timeout=30) == EXIT_OK, output.read_text()
        assert time.monotonic() - stopped_at < 20


DEV_SETTINGS_FROM_THE_TEST_HOST = frozenset(
    {"DATABASE_URL", "TEST_DATABASE_URL", "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "APP_URL", "S3_BUCKET", "DATA_DIR"}
)


def _imagejobs_script() -> Path:
    return Path(sys.executable).parent / "imagejobs"


def _imagejobs(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_imagejobs_script(), *argv], capture_output=True, text=True, timeout=60)


# --- generate and watch against a fake API ---------------------------------------------------------------------------


@dataclass
class FakeJobsApi:
    """Answers like the jobs API: POST starts job-1, GETs walk through `records`, events come from `events`."""

    records: list[dict[str, Any]]
    events: list[dict[str, Any]] | None = None
    start_status: int = 202
    start_body: dict[str, Any] = field(default_factory=lambda: {"jobId": "job-1", "status": "pending"})
    recorder: Recorder = field(default_factory=Recorder)
    gets: int = 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/jobs", self.start, methods=["POST"]),
                Route("/v1/jobs/{job_id}", self.get, methods=["GET"]),
                Route("/v1/jobs/{job_id}/events", self.stream, methods=["GET"]),
            ]
        )

    async def _record(self, request: Request) -> None:
        await record_request(self.recorder, request)

    async def start(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse(self.start_body, status_code=self.start_status)

    async def get(self, request: Request) -> Response:
        await self._record(request)
        if request.path_params["job_id"] != "job-1":
            return JSONResponse({"code": "job_not_found", "message": "No job."}, status_code=404)
        record = self.records[min(self.gets, len(self.records) - 1)]
        self.gets += 1
        return JSONResponse({"jobId": "job-1", **record})

    async def stream(self, request: Request) -> Response:
        await self._record(request)
        if self.events is None:
            return JSONResponse({"code": "not_found", "message": "Not Found"}, status_code=404)
        lines = [": keep-alive\n\n"]
        lines += [
            f"id: {number}\nevent: status\ndata: {json.dumps(event)}\n\n" for number, event in enumerate(self.events)
        ]
        return StreamingResponse(iter(lines), media_type="text/event-stream")


@pytest.fixture
async def serve_fake() -> AsyncIterator[Callable[[FakeJobsApi], Awaitable[str]]]:
    """Serve fake APIs on loopback ports for the duration of the test; returns each one's base URL."""
    async with AsyncExitStack() as stack:

        async def start(fake: FakeJobsApi) -> str:
            return await stack.enter_async_context(serve(fake.app()))

        yield start


ServeFake = Callable[[FakeJobsApi], Awaitable[str]]


async def _run_cli(*argv: str) -> int:
    # The CLI is synchronous; a thread keeps this loop free to serve the fake API.
    return await asyncio.to_thread(cli_main, list(argv))


COMPLETED = {
    "status": "completed",
    "progress": 100.0,
    "imageUrl": "http://files.test/images/cli-canvas/job-1.png",
    "imageUrls": ["http://files.test/images/cli-canvas/job-1.png", "http://files.test/images/cli-canvas/job-1-2.png"],
    "error": None,
}


async def test_generate_follows_the_event_stream_and_prints_the_urls(
    serve_fake: ServeFake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeJobsApi(
        records=[{"status": "pending", "progress": None}, COMPLETED],
        events=[{"status": "running", "progress": 50.0}, {"kind": "log", "message": "no status here"}, COMPLETED],
    )
    api_url = await serve_fake(fake)

    code = await _run_cli(
        "generate", "a lighthouse at dusk", "--api", api_url, "--api-key", "k-123",
        "--size", "640x480", "--n", "2", "--seed", "7", "--node", "n1",
        "--previous-image", "https://example.com/sketch.png", "--strength", "0.4", "--style", "ink",
    )  # fmt: skip

    captured = capsys.readouterr()
    assert code == EXIT_OK
    assert captured.out.splitlines() == COMPLETED["imageUrls"]
    assert captured.err.splitlines() == ["job-1  pending  --", "job-1  running  50%", "job-1  completed  100%"]
    start = fake.recorder.matching("/v1/jobs")[0]
    assert start.method == "POST"
    assert start.headers["authorization"] == "Bearer k-123"
    assert start.json() == {
        "workflowId": "cli-canvas",
        "nodeId": "n1",
        "provider": "local",
        "promptSpec": {
            "basePrompt": "a lighthouse at dusk",
            "styleModifiers": ["ink"],
            "size": "640x480",
            "n": 2,
            "seed": 7,
            "previousImage": "https://example.com/sketch.png",
            "strength": 0.4,
        },
    }
    assert [request.path for request in fake.recorder.requests][-2:] == ["/v1/jobs/job-1/events", "/v1/jobs/job-1"]


async def test_generate_polls_without_events_and_fails_with_the_error(
    serve_fake: ServeFake, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {
        "status": "failed",
        "progress": None,
        "error": "The prompt was refused by the provider.",
        "errorCode": "ContentPolicyViolation",
    }
    fake = FakeJobsApi(records=[{"status": "pending"}, {"status": "running", "progress": 25.0}, failed])
    api_url = await serve_fake(fake)

    code = await _run_cli("generate", "something refused", "--api", api_url, "--provider", "openai")

    captured = capsys.readouterr()
    assert code == EXIT_FAILED
    assert captured.out == ""
    assert "error: ContentPolicyViolation: The prompt was refused by the provider." in captured.err
    assert "job-1  running  25%" in captured.err
    body = fake.recorder.matching("/v1/jobs")[0].json()
    assert body["provider"] == "openai"
    assert body["nodeId"].startswith("node-")
    assert fake.gets == 3


async def test_generate_reports_a_refused_request_as_bad_usage(
    serve_fake: ServeFake, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeJobsApi(
        records=[],
        start_status=400,
        start_body={"code": "unknown_provider", "message": "Unknown provider 'nope'; available: local."},
    )
    api_url = await serve_fake(fake)

    code = await _run_cli("generate", "x", "--api", api_url, "--provider", "nope")

    assert code == EXIT_USAGE
    assert "error: unknown_provider: Unknown provider 'nope'; available: local." in capsys.readouterr().err


async def test_watch_follows_an_existing_job_and_knows_unknown_ones(
    serve_fake: ServeFake, capsys: pytest.CaptureFixture[str]
) -> None:
    api_url = await serve_fake(FakeJobsApi(records=[COMPLETED]))

    assert await _run_cli("watch", "job-1", "--api", api_url) == EXIT_OK
    assert capsys.readouterr().out.splitlines() == COMPLETED["imageUrls"]

    assert await _run_cli("watch", "job-404", "--api", api_url) == EXIT_USAGE
    assert "error: job_not_found: No job." in capsys.readouterr().err


def test_console_script_says_when_the_api_is_unreachable() -> None:
    result = _imagejobs("generate", "a lighthouse", "--api", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == EXIT_USAGE
    assert "error: api_unreachable: cannot reach the API at http://127.0.0.1:" in result.stderr
    assert "imagejobs dev" in result.stderr
    assert result.stdout == ""


class FakeTerminal:
    """A terminal (isatty) that keeps each write apart, so a test sees every redraw."""

    def __init__(self) -> None:
        self.written: list[str] = []

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> None:
        self.written.append(text)

    def flush(self) -> None:
        pass


def test_progress_bar_redraws_one_line_on_a_terminal() -> None:
    terminal = FakeTerminal()
    display = ProgressDisplay("job-1", terminal)  # type: ignore[arg-type]
    display.show({"status": "running", "progress": 50.0})
    display.show({"status": "completed"})
    display.finish()

    output = "".join(terminal.written)
    assert output.count("\n") == 1 and output.endswith("\n")
    assert "[" + "#" * 15 + "." * 15 + "]  50%  running" in terminal.written[0]
    assert terminal.written[1].startswith("\rjob-1  [" + "#" * 30 + "] 100%  completed")


def test_the_elapsed_time_moves_between_events_on_a_terminal() -> None:
    terminal = FakeTerminal()
    display = ProgressDisplay("job-1", terminal)  # type: ignore[arg-type]
    display.TICK_SECONDS = 0.05
    display.typical = 8.4
    display.show({"status": "running"})
    with display.ticking():
        time.sleep(0.3)  # no event comes
    redraws = [text for text in terminal.written if text.startswith("\rjob-1")]
    assert len(redraws) >= 3, terminal.written
    clocks = {text.split("running")[1].split("(")[0].strip() for text in redraws}
    assert len(clocks) >= 2, redraws  # the clock moved
    assert all("(usually ~8s)" in text for text in redraws), redraws


def test_a_retry_is_said_on_a_line_of_its_own() -> None:
    lines = io.StringIO()
    display = ProgressDisplay("job-1", lines)
    display.show({"status": "running"})
    display.say("Attempt 1 of 3 failed: Could not reach Pollinations; trying again.")
    assert "job-1  Attempt 1 of 3 failed: Could not reach Pollinations; trying again.\n" in lines.getvalue()
