"""Driving the product (through its HTTP API) and the floors (through the Temporal client), and watching both.

How completion is observed:
- single jobs (figures 3 and 6): the job's SSE stream (`GET /v1/jobs/{id}/events`) delivering its terminal
  event; floors: `handle.result()` returning;
- batches (figures 4 and 7): Temporal's close time of the last workflow, for the product and the floor alike
  (the harness waits on visibility counts, then reads the exact close times).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import aiohttp
import httpx
from sqlalchemy import text
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from bench.providers import WEBHOOK_PROVIDER, webhook_body, webhook_path
from bench.roles import floor_provider_queue
from bench.stack import BenchError, BenchStack, Workers
from bench.workflows import WAITING_MARK, FloorEvent, Step, StepsInput, StepsWorkflow, WaitingInput, WaitingWorkflow
from core.temporal import CANVAS_ID

T = TypeVar("T")

IMAGE_SIZE = "64x64"
TERMINAL_EVENT_KINDS = frozenset({"completed", "error", "cancelled"})
WEBHOOK_ATTEMPTS = 5
MB = 1024 * 1024


@dataclass(frozen=True)
class BenchConfig:
    """How much of everything; `quick()` is the smoke-test size (no warm-up: it proves the harness works,
    its figures mean nothing)."""

    jobs: int = 500
    scale_jobs: int = 2000
    latency_samples: int = 200
    overhead_samples: int = 50
    overhead_lanes: int = 5
    provider_seconds: float = 1.0
    result_mb: int = 64
    concurrency: int = 32
    warmup: int = 10
    pace_seconds: float = 0.1
    settle_seconds: float = 2.0
    # Visibility counts only detect the end of a batch (its exact end comes from close times); polling them often
    # would cost the Temporal server CPU that the figures are measuring.
    visibility_poll_seconds: float = 0.5
    overhead_warmup_rounds: int = 1
    board_nodes: int = 50
    large_board_nodes: int = 200
    observability_rounds: int = 2
    # Figure 11b: jobs a tenant capped at 2 starts at once.
    line_jobs: int = 20
    # Figure 12: the storm, 850 authentic deliveries with 100 in flight.
    storm_deliveries: int = 850
    storm_concurrency: int = 100
    timeout: float = 900.0

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            jobs=5,
            scale_jobs=10,
            latency_samples=8,
            overhead_samples=2,
            overhead_lanes=2,
            provider_seconds=0.2,
            result_mb=4,
            concurrency=8,
            warmup=0,
            pace_seconds=0.0,
            settle_seconds=0.0,
            visibility_poll_seconds=0.1,
            overhead_warmup_rounds=0,
            board_nodes=10,
            large_board_nodes=10,
            observability_rounds=1,
            line_jobs=4,
            storm_deliveries=6,
            storm_concurrency=3,
            timeout=60.0,
        )


def new_tag(what: str) -> str:
    """A canvas id (and the floor's CanvasWorkflowId) that selects one figure's workflows."""
    return f"bench-{what}-{uuid.uuid4().hex[:8]}"


def ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000


async def bounded(count: int, concurrency: int, make: Callable[[int], Awaitable[T]]) -> list[T]:
    """`make(0..count-1)` with at most `concurrency` in flight; results in order."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(index: int) -> T:
        async with semaphore:
            return await make(index)

    return await asyncio.gather(*(one(index) for index in range(count)))


async def alternately(index: int, *calls: Callable[[], Awaitable[T]]) -> list[T]:
    """Run `calls` one after the other, rotating who goes first, so no side always follows the other."""
    shift = index % len(calls)
    order = list(range(len(calls)))[shift:] + list(range(len(calls)))[:shift]
    results: dict[int, T] = {}
    for position in order:
        results[position] = await calls[position]()
    return [results[position] for position in range(len(calls))]


# --- the product and the floor, driven -------------------------------------------------------------------


class CpuWindow:
    """CPU the stack's processes spend from now until `per_item`, in milliseconds per item of work."""

    def __init__(self, stack: BenchStack, workers: Workers) -> None:
        self._stack = stack
        self._workers = workers
        self._before = stack.cpu(workers)

    def per_item(self, count: int) -> dict[str, float]:
        after = self._stack.cpu(self._workers)
        return {name: (after[name] - self._before[name]) * 1000 / count for name in after if name in self._before}


def started_job_id(status: int, text: str) -> str:
    """A POST /v1/jobs answer's job id; anything but 202 is an error."""
    if status != 202:
        raise BenchError(f"POST /v1/jobs answered {status}: {text[:300]}")
    job_id: str = json.loads(text)["jobId"]
    return job_id


async def post_job(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """POST /v1/jobs; the job's id, or BenchError on anything but 202."""
    response = await http.post("/v1/jobs", json=body)
    return started_job_id(response.status_code, response.text)


def job_body(canvas: str, node: str, *, provider: str = "local", model: str | None = None) -> dict[str, Any]:
    """A POST /v1/jobs body for one benchmark job."""
    body: dict[str, Any] = {
        "workflowId": canvas,
        "nodeId": node,
        "provider": provider,
        "promptSpec": {"basePrompt": f"benchmark {node}", "size": IMAGE_SIZE},
    }
    if model:
        body["model"] = model
    return body


async def start_job(
    stack: BenchStack, canvas: str, node: str, *, provider: str = "local", model: str | None = None
) -> str:
    return await post_job(stack.http, job_body(canvas, node, provider=provider, model=model))


@asynccontextmanager
async def load_generator(stack: BenchStack, in_flight: int) -> AsyncIterator[aiohttp.ClientSession]:
    """A sender for many requests at once, with a connection for each one in flight. It is aiohttp, not the
    harness' httpx client: clients call from their own machines, and on this one httpx spent several times the CPU
    per request (about 11 ms per webhook delivery, aiohttp 0.6 ms), on the two cores the product runs on."""
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(str(stack.http.base_url), connector=connector) as session:
        yield session


async def start_job_from(load: aiohttp.ClientSession, canvas: str, node: str) -> str:
    """`start_job`, sent with a `load_generator`."""
    async with load.post("/v1/jobs", json=job_body(canvas, node)) as response:
        return started_job_id(response.status, await response.text())


async def start_floor(stack: BenchStack, run: Any, queue: str, tag: str, *arguments: Any) -> WorkflowHandle[Any, Any]:
    """Start a floor workflow on `queue`, tagged `tag` (its CanvasWorkflowId) so the harness can count it."""
    handle: WorkflowHandle[Any, Any] = await stack.client.start_workflow(
        run,
        args=list(arguments),
        id=f"floor-{uuid.uuid4().hex}",
        task_queue=queue,
        search_attributes=TypedSearchAttributes([SearchAttributePair(CANVAS_ID, tag)]),
    )
    return handle


async def send_webhook(stack: BenchStack, job_id: str, body: bytes) -> None:
    """One delivery; anything but `200 accepted` is an error."""
    path = webhook_path(stack.settings.WEBHOOK_SECRET, job_id)
    response = await stack.http.post(path, content=body, headers={"content-type": "application/json"})
    require_accepted(path, response.status_code, response.text)


def require_accepted(path: str, status: int, text: str) -> None:
    """A delivery's answer: anything but `200 {"status": "accepted"}` is an error."""
    if status != 200 or json.loads(text).get("status") != "accepted":
        raise BenchError(f"{path} answered {status}: {text[:300]}")


async def deliver_like_a_provider(
    send: Callable[[], Awaitable[None]], failures: list[str], answer_ms: list[float] | None = None
) -> None:
    """Deliver as providers do under load: `send` one delivery, retrying a failed one with backoff (a 5xx asks for
    exactly that), noting each failure in `failures` (its type first: a reset's message is often empty) and each
    attempt's time to its answer in `answer_ms`."""
    for attempt in range(WEBHOOK_ATTEMPTS):
        started = time.perf_counter()
        try:
            await send()
            return
        except (BenchError, httpx.TransportError, aiohttp.ClientError) as error:
            failures.append(f"{type(error).__name__}: {error}")
            if attempt + 1 == WEBHOOK_ATTEMPTS:
                raise
            await asyncio.sleep(0.5 * 2**attempt)
        finally:
            if answer_ms is not None:
                answer_ms.append((time.perf_counter() - started) * 1000)


def synchronous_job_steps(
    queue: str, seconds: float = 0.0, *, local: bool = False, statements: bool = False
) -> list[Step]:
    """An image job with a synchronous provider: create_run, mark_running, generate_image (on the provider
    queue), update_node, complete_run; `local` makes the four database steps local activities, `statements`
    local activities that each commit one real PostgreSQL statement."""
    database_step = Step(None, statement=True) if statements else Step(None if local else queue)
    return [database_step, database_step, Step(floor_provider_queue(queue), seconds), database_step, database_step]


def webhook_job_input(queue: str) -> WaitingInput:
    """An image job with a webhook provider: create_run, mark_running, submit_job, attach_provider_job; then,
    after the terminal webhook, store_outputs, update_node, complete_run."""
    provider_step = Step(floor_provider_queue(queue))
    return WaitingInput(
        before=[Step(queue), Step(queue), provider_step, Step(queue)], after=[provider_step, Step(queue), Step(queue)]
    )


async def wait_for_terminal_event(stack: BenchStack, job_id: str) -> str:
    """Follow the job's SSE stream until its terminal event; returns that event's kind."""
    async with stack.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
        if response.status_code != 200:
            raise BenchError(f"the event stream of {job_id} answered {response.status_code}")
        async for line in response.aiter_lines():
            kind = line.removeprefix("event:").strip() if line.startswith("event:") else None
            if kind in TERMINAL_EVENT_KINDS:
                return kind
    raise BenchError(f"the event stream of {job_id} ended without a terminal event")


async def job_completes(stack: BenchStack, job_id: str) -> None:
    kind = await wait_for_terminal_event(stack, job_id)
    if kind != "completed":
        raise BenchError(f"job {job_id} ended with {kind}, not completed")


async def count_runs(stack: BenchStack, canvas: str, condition: str) -> int:
    async with stack.sessions() as session:
        found = await session.execute(
            text(f"SELECT count(*) FROM runs WHERE canvas_id = :canvas AND {condition}"), {"canvas": canvas}
        )
        return int(found.scalar_one())


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_for_waiting_jobs(stack: BenchStack, canvas: str, count: int, config: BenchConfig) -> None:
    """Until every job has handed its work to the provider (its provider job id is stored) and waits."""

    async def all_waiting() -> bool:
        return await count_runs(stack, canvas, "provider_job_id IS NOT NULL") >= count

    await poll(all_waiting, f"{count} jobs to wait on their webhook", config.timeout)


async def wait_for_waiting_floors(stack: BenchStack, tag: str, count: int, config: BenchConfig) -> None:
    query = f"CanvasWorkflowId = '{tag}' AND NodeId = '{WAITING_MARK}'"

    async def all_waiting() -> bool:
        return (await stack.client.count_workflows(query)).count >= count

    await poll(all_waiting, f"{count} floor workflows to wait", config.timeout, interval=config.visibility_poll_seconds)


async def wait_for_closed(stack: BenchStack, tag: str, count: int, config: BenchConfig) -> list[datetime]:
    """Until all `count` workflows tagged `tag` have completed; returns their close times.

    Fails as soon as one of them ends otherwise (failed, terminated, timed out, ...).
    """
    query = f"CanvasWorkflowId = '{tag}'"

    async def all_completed() -> bool:
        counted = await stack.client.count_workflows(f"{query} GROUP BY ExecutionStatus")
        by_status = {str(group.group_values[0]): group.count for group in counted.groups}
        others = {status: number for status, number in by_status.items() if status not in ("Running", "Completed")}
        if others:
            raise BenchError(f"workflows of {tag} ended badly: {others}")
        return by_status.get("Completed", 0) >= count

    await poll(
        all_completed,
        f"{count} workflows of {tag} to complete",
        config.timeout,
        interval=config.visibility_poll_seconds,
    )
    return [execution.close_time async for execution in stack.client.list_workflows(query) if execution.close_time]


async def terminate_tagged(stack: BenchStack, tag: str) -> None:
    """End every still running workflow tagged `tag` (jobs a figure started but does not let run)."""
    async for execution in stack.client.list_workflows(f"CanvasWorkflowId = '{tag}' AND ExecutionStatus = 'Running'"):
        await stack.client.get_workflow_handle(execution.id).terminate("benchmark figure done")


async def history_length(stack: BenchStack, workflow_id: str) -> int:
    return len([event async for event in stack.client.get_workflow_handle(workflow_id).fetch_history_events()])


async def writes_per_job(stack: BenchStack, canvas: str) -> dict[str, float]:
    """Run events and node versions per job of a canvas: how often each job wrote to the database."""
    async with stack.sessions() as session:
        found = await session.execute(
            text(
                "SELECT (SELECT count(*) FROM run_events e JOIN runs r ON r.id = e.run_id WHERE r.canvas_id = :c),"
                " (SELECT coalesce(sum(version), 0) FROM workflow_nodes WHERE canvas_id = :c),"
                " (SELECT count(*) FROM runs WHERE canvas_id = :c)"
            ),
            {"c": canvas},
        )
        events, node_versions, jobs = found.one()
    return {"runEventsPerJob": events / jobs, "nodeWritesPerJob": node_versions / jobs}


async def warm_up(stack: BenchStack, config: BenchConfig, workers: Workers) -> None:
    """One job of each kind through fresh processes, so first-use costs (imports, pools) stay out of figures."""
    queue = workers.floor_queue
    canvas = new_tag("warmup")
    local_job = await start_job(stack, canvas, "n-local")
    webhook_job = await start_job(stack, canvas, "n-webhook", provider=WEBHOOK_PROVIDER)
    await wait_for_waiting_jobs(stack, canvas, 1, config)
    small = f"{stack.files_url}/small.png"
    await send_webhook(stack, webhook_job, webhook_body("succeeded", "warmup", output=[small]))
    await asyncio.gather(job_completes(stack, local_job), job_completes(stack, webhook_job))
    steps = await start_floor(stack, StepsWorkflow.run, queue, canvas, StepsInput(synchronous_job_steps(queue)))
    waiting = await start_floor(stack, WaitingWorkflow.run, queue, canvas, webhook_job_input(queue))
    await waiting.signal(WaitingWorkflow.event, FloorEvent(status="succeeded"))
    await asyncio.gather(steps.result(), waiting.result())


async def node_messages(http: httpx.AsyncClient, url: str) -> AsyncIterator[dict[str, Any]]:
    """The React Flow nodes a canvas' event stream (`url`) sends (its `node` messages), as they come."""
    async with http.stream("GET", url, timeout=None) as response:
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:") and event == "node":
                yield json.loads(line.removeprefix("data:"))
