"""Latency figures: 1 start, 2 webhook, 3 orchestration overhead, 5 live (commit to SSE client)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import WorkflowHandle

from bench.drive import (
    IMAGE_SIZE,
    BenchConfig,
    CpuWindow,
    alternately,
    bounded,
    count_runs,
    job_completes,
    ms_since,
    new_tag,
    node_messages,
    poll,
    send_webhook,
    start_floor,
    start_job,
    synchronous_job_steps,
    terminate_tagged,
    wait_for_closed,
    wait_for_waiting_floors,
    wait_for_waiting_jobs,
    webhook_job_input,
)
from bench.floors import forget_floor_runs
from bench.providers import WEBHOOK_PROVIDER, webhook_body
from bench.report import Figure, Series, percentile
from bench.stack import BenchError, BenchStack, Workers
from bench.workflows import EmptyWorkflow, FloorEvent, Step, StepsInput, StepsWorkflow, WaitingWorkflow
from core.db import autocommit_session_factory, libpq_url, transaction
from core.events import CHANNEL
from handoff.starts import new_job_id, polling_plan
from handoff.starts import start_job as start_image_job
from models.payloads import ImageJobInput, PromptSpec
from models.schemas import StartImageJobRequest
from models.vocabulary import EventKind
from store import canvas_nodes, run_events, runs

# --- 1: start latency --------------------------------------------------------------------------------------


@dataclass
class StartSample:
    job_id: str
    answer_ms: float
    sent_at: float  # wall clock (the database's clock on this machine), to compare with workflow_started_at


async def api_start(stack: BenchStack, canvas: str, node: str) -> StartSample:
    sent_at, started = time.time(), time.perf_counter()
    job_id = await start_job(stack, canvas, node)
    return StartSample(job_id=job_id, answer_ms=ms_since(started), sent_at=sent_at)


async def workflow_started_ms(
    stack: BenchStack, canvas: str, samples: list[StartSample], config: BenchConfig
) -> list[float]:
    """For each start: from the request's sending until its workflow was confirmed started (after the answer).

    The API starts a workflow after its answer, so the last starts may still be on their way: they get the
    benchmark's timeout to arrive before a missing one counts as a job answered but never started.
    """

    async def all_started() -> bool:
        return await count_runs(stack, canvas, "workflow_started_at IS NOT NULL") >= len(samples)

    with contextlib.suppress(BenchError):
        await poll(all_started, f"{len(samples)} workflows to start", config.timeout)
    async with stack.sessions() as session:
        found = await session.execute(
            text("SELECT id, extract(epoch FROM workflow_started_at) FROM runs WHERE id = ANY(:ids)"),
            {"ids": [sample.job_id for sample in samples]},
        )
        started_at = {job_id: float(epoch) for job_id, epoch in found.all() if epoch is not None}
    missing = [sample.job_id for sample in samples if sample.job_id not in started_at]
    if missing:
        raise BenchError(f"{len(missing)} jobs were answered but never started, e.g. {missing[0]}")
    return [(started_at[sample.job_id] - sample.sent_at) * 1000 for sample in samples]


async def floor_route_ms(stack: BenchStack, path: str, **request: Any) -> float:
    """One call of a bench floor route (bench/floors.py): the same statement as the product's, and nothing else."""
    started = time.perf_counter()
    response = await stack.http.post(path, **request)
    if response.status_code not in (200, 202):
        raise BenchError(f"{path} answered {response.status_code}: {response.text[:300]}")
    return ms_since(started)


async def bare_start_ms(stack: BenchStack, queue: str, tag: str) -> float:
    """Only the tag (to find the workflow again) is added to a bare start; the product adds four and a summary."""
    started = time.perf_counter()
    await start_floor(stack, EmptyWorkflow.run, queue, tag)
    return ms_since(started)


async def record_run(stack: BenchStack, job: ImageJobInput) -> None:
    async with autocommit_session_factory(stack.engine)() as session:
        await runs.record_run(session, job=job)


async def start_workflow(stack: BenchStack, job: ImageJobInput) -> None:
    await start_image_job(stack.client, stack.settings, job)


async def empty_session(stack: BenchStack, job: ImageJobInput) -> None:
    async with stack.sessions() as session:
        await session.execute(text("SELECT 1"))


START_STEPS: dict[str, Callable[[BenchStack, ImageJobInput], Awaitable[None]]] = {
    "record run+event+node claim, read back, older jobs (1 statement; then the answer)": record_run,
    "start_workflow (4 search attributes, summary; after the answer)": start_workflow,
    "empty session (checkout, pre-ping, SELECT 1)": empty_session,
}
"""What POST /v1/jobs does, step by step (api/routes/jobs.py, handoff/sweep.py), plus a session by itself."""


async def start_breakdown(stack: BenchStack, canvas: str, samples: int) -> dict[str, dict[str, float]]:
    """The route's steps made one by one from the harness and timed: where its time goes."""
    timings: dict[str, list[float]] = {name: [] for name in START_STEPS}
    for index in range(samples):
        request = StartImageJobRequest.model_validate(
            {"workflowId": canvas, "nodeId": f"b{index}", "promptSpec": {"basePrompt": "breakdown", "size": IMAGE_SIZE}}
        )
        job = request.to_job(job_id=new_job_id(), model="procedural")
        job.polling = polling_plan(stack.settings)
        for name, step in START_STEPS.items():
            started = time.perf_counter()
            await step(stack, job)
            timings[name].append(ms_since(started))
    return {name: summary(values) for name, values in timings.items()}


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99)}


async def start_latency(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    canvas, floor_tag = new_tag("start"), new_tag("start-floor")
    product: list[StartSample] = []
    floor: list[float] = []
    route_floor: list[float] = []
    for index in range(config.warmup + config.latency_samples):
        if index == config.warmup:
            cpu = CpuWindow(stack, workers)
        route_body = {"workflowId": floor_tag, "nodeId": f"n{index}", "prompt": "a lighthouse"}
        api, bare_ms, route_ms = await alternately(
            index,
            partial(api_start, stack, canvas, f"n{index}"),
            partial(bare_start_ms, stack, workers.floor_queue, floor_tag),
            partial(floor_route_ms, stack, "/bench/floor/start", json=route_body),
        )
        if index >= config.warmup:
            product.append(cast(StartSample, api))
            floor.append(cast(float, bare_ms))
            route_floor.append(cast(float, route_ms))
        # Let the API finish the start it owes (after its answer), so the next call is not measured against it.
        await asyncio.sleep(config.pace_seconds)
    api_cpu = cpu.per_item(config.latency_samples)["api"]
    until_started = summary(await workflow_started_ms(stack, canvas, product, config))
    breakdown_samples = max(2, config.latency_samples // 4)
    breakdown = await start_breakdown(stack, canvas, breakdown_samples)
    await terminate_tagged(stack, canvas)
    await terminate_tagged(stack, floor_tag)
    await forget_floor_runs(stack.sessions)
    return Figure(
        number="1",
        title="start latency",
        unit="ms",
        product=Series.of_samples(
            "POST /v1/jobs, answered 202",
            [sample.answer_ms for sample in product],
            apiCpuMsPerRequest=api_cpu,
            workflowStartedMs=until_started,
            breakdownMs=breakdown,
        ),
        floors=[
            Series.of_samples("bare route, same INSERT, same pool", route_floor),
            Series.of_samples("start_workflow of an empty workflow", floor),
        ],
        method=(
            "Sequential calls from the harness, product and floors rotating who goes first, "
            f"{config.pace_seconds:.2f} s apart, with no worker running (so the started workflows do not compete "
            "for the CPU; they are terminated afterwards). The API answers once "
            "the run is committed and starts the workflow right after (handoff/sweep.py); workflowStartedMs: from "
            "sending the request until the start was confirmed (runs.workflow_started_at). apiCpuMsPerRequest: "
            "CPU time of the API process / requests, the start included. breakdownMs: the same calls the route "
            f"makes, made directly from the harness ({breakdown_samples} samples). Floors: a bare FastAPI route in "
            "the API process committing the same statement (runs.record_run) through the same pool "
            "(bench/floors.py), the floor of the answer; and Temporal's own start_workflow, the floor of "
            "workflowStartedMs."
        ),
    )


# --- 2: webhook latency ------------------------------------------------------------------------------------


async def undelivered_signals(stack: BenchStack, job_ids: list[str]) -> int:
    async with stack.sessions() as session:
        found = await session.execute(
            text("SELECT count(*) FROM pending_signals WHERE run_id = ANY(:ids)"), {"ids": job_ids}
        )
        return int(found.scalar_one())


async def webhook_delivery(stack: BenchStack, job_id: str, event: FloorEvent) -> float:
    body = webhook_body(event.status, event.delivery_id or "", progress=event.progress, output=event.output_urls)
    started = time.perf_counter()
    await send_webhook(stack, job_id, body)
    return ms_since(started)


async def signal_delivery(handle: WorkflowHandle[Any, Any], event: FloorEvent) -> float:
    started = time.perf_counter()
    await handle.signal(WaitingWorkflow.event, event)
    return ms_since(started)


async def floor_run(stack: BenchStack, canvas: str, node: str) -> str:
    """A run for the webhook floor route to take deliveries for (no workflow: the route only commits)."""
    response = await stack.http.post("/bench/floor/start", json={"workflowId": canvas, "nodeId": node})
    if response.status_code != 202:
        raise BenchError(f"the floor's run: {response.status_code} {response.text[:300]}")
    return str(response.json()["jobId"])


async def webhook_latency(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    queue = workers.floor_queue
    # Every job gets two deliveries (progress, then terminal); the first `warmup` jobs are not counted.
    count = config.warmup + math.ceil(config.latency_samples / 2)
    canvas, tag = new_tag("webhook"), new_tag("webhook-floor")
    job_ids = await bounded(
        count, config.concurrency, lambda i: start_job(stack, canvas, f"n{i}", provider=WEBHOOK_PROVIDER)
    )
    floors = await bounded(
        count,
        config.concurrency,
        lambda i: start_floor(stack, WaitingWorkflow.run, queue, tag, webhook_job_input(queue)),
    )
    await wait_for_waiting_jobs(stack, canvas, count, config)
    await wait_for_waiting_floors(stack, tag, count, config)
    route_jobs = [await floor_run(stack, tag, f"n{index}") for index in range(count)]
    small = f"{stack.files_url}/small.png"
    product: list[float] = []
    floor: list[float] = []
    route_floor: list[float] = []
    cpu = CpuWindow(stack, workers)
    for status, progress, output in (("running", 0.5, []), ("succeeded", None, [small])):
        for index, (job_id, handle, route_job) in enumerate(zip(job_ids, floors, route_jobs, strict=True)):
            event = FloorEvent(status=status, progress=progress, delivery_id=f"{status}-{index}", output_urls=output)
            body = webhook_body(status, f"{status}-{index}", progress=progress, output=output)
            webhook_ms, signal_ms, route_ms = await alternately(
                index,
                partial(webhook_delivery, stack, job_id, event),
                partial(signal_delivery, handle, event),
                partial(floor_route_ms, stack, f"/bench/floor/webhook/{route_job}", content=body),
            )
            if index >= config.warmup:
                product.append(webhook_ms)
                floor.append(signal_ms)
                route_floor.append(route_ms)
            # Let the worker finish what the delivery set off, so the next one is not measured against it.
            await asyncio.sleep(config.pace_seconds)
    api_cpu = cpu.per_item(2 * count)["api"]
    await wait_for_closed(stack, canvas, count, config)
    await wait_for_closed(stack, tag, count, config)
    await forget_floor_runs(stack.sessions)
    return Figure(
        number="2",
        title="webhook latency",
        unit="ms",
        product=Series.of_samples(
            "POST /v1/webhooks/..., answered 200",
            product,
            apiCpuMsPerRequest=api_cpu,
            signalsLeftUndelivered=await undelivered_signals(stack, job_ids),
        ),
        floors=[
            Series.of_samples("bare route, same INSERTs, same pool", route_floor),
            Series.of_samples("signal to a waiting workflow", floor),
        ],
        method=(
            f"{count - config.warmup} jobs waiting on their webhook, each sent a progress and then a terminal "
            f"webhook, one at a time, {config.pace_seconds:.2f} s apart (samples: both kinds); the floor gets the "
            "same signals, alternating. The API answers once the delivery is committed (its event and a pending "
            "signal) and signals the workflow right after (handoff/sweep.py); every job then completed, and "
            "signalsLeftUndelivered counts pending signals left. apiCpuMsPerRequest: CPU time of the API "
            "process / webhooks, the signal included. Floors: a bare FastAPI route in the API process taking the "
            "same delivery statement (deliveries.take_delivery) through the same pool, for runs of its own "
            "(bench/floors.py), the floor of the answer; and a bare signal, the floor of what follows it."
        ),
    )


# --- 3: orchestration overhead -----------------------------------------------------------------------------


async def orchestration_overhead(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    """Needs a product worker whose local provider takes `config.provider_seconds`."""
    queue = workers.floor_queue
    canvas, tag = new_tag("overhead"), new_tag("overhead-floor")
    samples: dict[str, list[float]] = {"product": [], "same": [], "local": [], "single": []}
    per_lane = math.ceil(config.overhead_samples / config.overhead_lanes)

    provider_ms = config.provider_seconds * 1000

    async def product(node: str) -> float:
        started = time.perf_counter()
        await job_completes(stack, await start_job(stack, canvas, node))
        return ms_since(started) - provider_ms

    async def floor(steps: list[Step]) -> float:
        started = time.perf_counter()
        handle = await start_floor(stack, StepsWorkflow.run, queue, tag, StepsInput(steps))
        await handle.result()
        return ms_since(started) - provider_ms

    same_steps = synchronous_job_steps(queue, config.provider_seconds)
    local_steps = synchronous_job_steps(queue, config.provider_seconds, local=True)
    single_step = [Step(queue, config.provider_seconds)]

    async def lane(number: int) -> None:
        for round_index in range(config.overhead_warmup_rounds + per_lane):
            measured = await alternately(
                round_index,
                partial(product, f"n{number}-{round_index}"),
                partial(floor, same_steps),
                partial(floor, local_steps),
                partial(floor, single_step),
            )
            if round_index >= config.overhead_warmup_rounds:
                for key, value in zip(samples, measured, strict=True):
                    samples[key].append(value)

    await asyncio.gather(*(lane(number) for number in range(config.overhead_lanes)))
    return Figure(
        number="3",
        title=f"orchestration overhead (end to end minus the provider's {config.provider_seconds:.1f} s)",
        unit="ms",
        product=Series.of_samples("POST /v1/jobs until SSE `completed`", samples["product"]),
        floors=[
            Series.of_samples("same 5 activities, one sleeping", samples["same"]),
            Series.of_samples("same, 4 DB steps as local activities", samples["local"]),
            Series.of_samples("one sleeping activity", samples["single"]),
        ],
        method=(
            f"local provider with LOCAL_PROVIDER_DELAY_MS={provider_ms:.0f} and {IMAGE_SIZE}; "
            f"{config.overhead_lanes} lanes in parallel, each running product and floors one after the other "
            f"({config.overhead_warmup_rounds} round(s) per lane discarded). "
            "Product completion = SSE event; floor completion = handle.result()."
        ),
    )


# --- 5: live latency ---------------------------------------------------------------------------------------


class Arrivals:
    """When each event id reached a reader (perf_counter), fed from any thread."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._times: dict[int, float] = {}
        self._changed = asyncio.Event()

    def record(self, event_id: int, at: float) -> None:
        self._loop.call_soon_threadsafe(self._store, event_id, at)

    def _store(self, event_id: int, at: float) -> None:
        self._times.setdefault(event_id, at)
        self._changed.set()

    async def wait_for(self, event_id: int, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while event_id not in self._times:
            self._changed.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"event {event_id} never arrived")
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue
        return self._times[event_id]


def event_id_of(message: dict[str, Any]) -> int | None:
    """A job event notification's event id (figure 5a's key)."""
    return int(message["id"]) if message.get("kind") == "event" else None


def listen_in_thread(
    database_url: str,
    arrivals: Arrivals,
    ready: threading.Event,
    stop: threading.Event,
    key: Callable[[dict[str, Any]], int | None] = event_id_of,
) -> None:
    """A bare LISTEN on the product's channel, on a blocking connection in its own thread (the floor); each
    notification `key` knows is recorded under that key."""
    with psycopg.connect(libpq_url(database_url), autocommit=True) as connection:
        connection.execute(f"LISTEN {CHANNEL}")
        ready.set()
        while not stop.is_set():
            for notify in connection.notifies(timeout=0.2):
                at = time.perf_counter()
                found = key(json.loads(notify.payload))
                if found is not None:
                    arrivals.record(found, at)


async def read_stream(stack: BenchStack, job_id: str, arrivals: Arrivals) -> None:
    async with stack.http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
        async for line in response.aiter_lines():
            if line.startswith("id:"):
                arrivals.record(int(line.removeprefix("id:").strip()), time.perf_counter())


@dataclass
class LiveSamples:
    product: list[float] = field(default_factory=list)  # ms from COMMIT to the SSE client
    floor: list[float] = field(default_factory=list)  # ms from COMMIT to the bare LISTEN
    commits: list[float] = field(default_factory=list)  # ms the COMMIT itself took


# One change: make it in the session (not yet committed) and return the key both readers will record it under.
Change = Callable[[AsyncSession, int], Awaitable[int]]


async def sample_live(
    stack: BenchStack,
    config: BenchConfig,
    *,
    read: Callable[[Arrivals], Awaitable[None]],
    key: Callable[[dict[str, Any]], int | None],
    change: Change,
) -> LiveSamples:
    """Commit one change at a time; time its arrival at an SSE reader (`read`) and at a bare LISTEN (`key`)."""
    sse, listened = Arrivals(), Arrivals()
    ready, stop = threading.Event(), threading.Event()
    database_url = stack.settings.require_database_url()
    listener = asyncio.create_task(asyncio.to_thread(listen_in_thread, database_url, listened, ready, stop, key))
    reader = asyncio.create_task(read(sse))
    samples = LiveSamples()
    try:
        await asyncio.to_thread(ready.wait, 10)
        for index in range(config.warmup + config.latency_samples):
            async with stack.sessions() as session:
                arrival_key = await change(session, index)
                committing = time.perf_counter()
                await session.commit()
                commit_ms = ms_since(committing)
            sse_at, listen_at = await asyncio.gather(sse.wait_for(arrival_key), listened.wait_for(arrival_key))
            if index >= config.warmup:
                samples.product.append((sse_at - committing) * 1000)
                samples.floor.append((listen_at - committing) * 1000)
                samples.commits.append(commit_ms)
    finally:
        stop.set()
        reader.cancel()
        await asyncio.gather(listener, reader, return_exceptions=True)
    return samples


async def live_latency(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    job = ImageJobInput(
        job_id=new_job_id(),
        canvas_id=new_tag("live"),
        node_id="n1",
        provider="local",
        model="procedural",
        spec=PromptSpec(prompt="live latency"),
    )
    async with transaction(stack.sessions) as session:
        await runs.record_run(session, job=job)

    async def add_event(session: AsyncSession, index: int) -> int:
        message = f"benchmark event {index}"
        event_id = await run_events.add_event(session, run_id=job.job_id, kind=EventKind.LOG, message=message)
        if event_id is None:
            raise BenchError("add_event stored nothing")
        return event_id

    samples = await sample_live(
        stack, config, read=partial(read_stream, stack, job.job_id), key=event_id_of, change=add_event
    )
    return Figure(
        number="5a",
        title="live latency of a job's stream, commit to client",
        unit="ms",
        product=Series.of_samples("SSE client receives the event", samples.product),
        floors=[
            Series.of_samples(
                "bare LISTEN receives the NOTIFY",
                samples.floor,
                commitMs={"p50": percentile(samples.commits, 0.5), "p99": percentile(samples.commits, 0.99)},
            )
        ],
        method=(
            "events inserted one at a time with store.run_events.add_event; the clock starts when COMMIT is sent "
            "(the commit's own time, in the floor's detail, is part of both); one SSE client, one LISTEN thread."
        ),
    )


# --- 5b: a canvas' stream ------------------------------------------------------------------------------------------

# A board of this many nodes; one of them changes per sample, and the stream should read that one only.
CANVAS_STREAM_NODES = 50


async def read_canvas_stream(stack: BenchStack, canvas_id: str, arrivals: Arrivals, watched: str) -> None:
    """Record each `node` message of `watched` under the sample number its data carries."""
    async for node in node_messages(stack.http, f"/v1/canvases/{canvas_id}/events"):
        if node["id"] == watched and "sample" in node["data"]:
            arrivals.record(int(node["data"]["sample"]), time.perf_counter())


async def canvas_live_latency(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    canvas_id, watched = new_tag("live-canvas"), "n0"
    async with transaction(stack.sessions) as session:
        for index in range(CANVAS_STREAM_NODES):
            await canvas_nodes.upsert_node(
                session, canvas_id=canvas_id, node_id=f"n{index}", node_type=None, position=None, data={"i": index}
            )
    versions: dict[int, int] = {}  # the watched node's version -> the sample that made it

    def sample_of(message: dict[str, Any]) -> int | None:
        if message.get("kind") != "node" or message.get("nodeId") != watched:
            return None
        return versions.get(int(message["version"]))

    async def update_node(session: AsyncSession, index: int) -> int:
        node = await canvas_nodes.upsert_node(
            session, canvas_id=canvas_id, node_id=watched, node_type=None, position=None, data={"sample": index}
        )
        versions[node.version] = index
        return index

    samples = await sample_live(
        stack,
        config,
        read=partial(read_canvas_stream, stack, canvas_id, watched=watched),
        key=sample_of,
        change=update_node,
    )
    return Figure(
        number="5b",
        title=f"live latency of a canvas' stream ({CANVAS_STREAM_NODES}-node board), commit to client",
        unit="ms",
        product=Series.of_samples("SSE client receives the node", samples.product),
        floors=[Series.of_samples("bare LISTEN receives the NOTIFY", samples.floor)],
        method=(
            f"a board of {CANVAS_STREAM_NODES} nodes; one node's data updated at a time with "
            "store.canvas_nodes.upsert_node, the clock starting when COMMIT is sent; one SSE client on the "
            "canvas' stream, one LISTEN thread."
        ),
    )
