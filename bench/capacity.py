"""Capacity figures: 4 throughput, 6 memory while storing a large result, 7 scale (jobs waiting on webhooks)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image
from temporalio.client import WorkflowHandle

from bench import procfs
from bench.drive import (
    MB,
    BenchConfig,
    CpuWindow,
    bounded,
    deliver_like_a_provider,
    history_length,
    job_completes,
    load_generator,
    new_tag,
    post_job,
    send_webhook,
    start_floor,
    start_job,
    start_job_from,
    synchronous_job_steps,
    wait_for_closed,
    wait_for_terminal_event,
    wait_for_waiting_floors,
    wait_for_waiting_jobs,
    webhook_job_input,
    writes_per_job,
)
from bench.providers import DOWNLOAD_PROVIDER, WEBHOOK_PROVIDER, webhook_body
from bench.report import Figure, Series, percentile
from bench.stack import BenchError, BenchStack, Child, Workers
from bench.workflows import FloorEvent, StepsInput, StepsWorkflow, WaitingWorkflow

# --- 4: throughput -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    """How a batch of concurrent jobs went: jobs/s, seconds, and CPU per job of each process."""

    rate: float
    seconds: float
    submit_seconds: float
    cpu_ms_per_job: dict[str, float]

    def detail(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "submitSeconds": self.submit_seconds, "cpuMsPerJob": self.cpu_ms_per_job}


async def run_batch(
    stack: BenchStack, config: BenchConfig, workers: Workers, tag: str, start: Callable[[int], Awaitable[Any]]
) -> tuple[Batch, list[Any]]:
    """Start `config.jobs` jobs with `start` (all tagged `tag`), wait for all to close, and measure the rate."""
    cpu = CpuWindow(stack, workers)
    started = time.time()
    handles = await bounded(config.jobs, config.concurrency, start)
    submitted = time.time() - started
    closes = await wait_for_closed(stack, tag, config.jobs, config)
    elapsed = max(close.timestamp() for close in closes) - started
    return Batch(config.jobs / elapsed, elapsed, submitted, cpu.per_item(config.jobs)), handles


async def start_floor_at(
    stack: BenchStack, queue: str, tag: str, steps: StepsInput, index: int
) -> WorkflowHandle[Any, Any]:
    """The `index`-th floor job of a batch (all alike)."""
    return await start_floor(stack, StepsWorkflow.run, queue, tag, steps)


async def throughput(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    queue = workers.floor_queue
    canvas = new_tag("throughput")
    async with load_generator(stack, config.concurrency) as load:
        batch, job_ids = await run_batch(
            stack, config, workers, canvas, lambda i: start_job_from(load, canvas, f"n{i}")
        )
    product = Series.of_value(
        "image jobs, local provider, no delay",
        batch.rate,
        config.jobs,
        historyEventsPerJob=await history_length(stack, job_ids[0]),
        **await writes_per_job(stack, canvas),
        **batch.detail(),
    )
    floors = []
    floor_worker_cpu: dict[str, float] = {}
    shapes = (
        ("same 5 activities, no-op", synchronous_job_steps(queue)),
        ("same, 4 DB steps as local activities", synchronous_job_steps(queue, local=True)),
        ("same, each DB step one real PG statement", synchronous_job_steps(queue, statements=True)),
    )
    for label, steps in shapes:
        tag = new_tag("throughput-floor")
        batch, handles = await run_batch(
            stack,
            config,
            workers,
            tag,
            partial(start_floor_at, stack, queue, tag, StepsInput(steps)),
        )
        history = await history_length(stack, handles[0].id)
        floors.append(Series.of_value(label, batch.rate, config.jobs, historyEventsPerJob=history, **batch.detail()))
        floor_worker_cpu[label] = batch.cpu_ms_per_job.get("floor worker", 0.0)
    worker_cpu = product.detail["cpuMsPerJob"].get("worker", 0.0)
    # Must 1's second goal: the product worker's CPU per job beside each floor worker's.
    product.detail["workerCpuRatio"] = {label: worker_cpu / cpu for label, cpu in floor_worker_cpu.items() if cpu}
    return Figure(
        number="4",
        title=f"throughput, {config.jobs} concurrent jobs",
        unit="jobs/s",
        product=product,
        floors=floors,
        method=(
            f"all {config.jobs} started at once ({config.concurrency} start calls in flight); rate = jobs / (last "
            "workflow close time - first start call); the product's start calls are sent with aiohttp "
            "(bench/drive.load_generator). One worker process each. cpuMsPerJob: CPU time of each "
            "process during the batch / jobs; workerCpuRatio: the product worker's cpuMsPerJob / each floor worker's. "
            "The last floor's database steps each commit one INSERT of a small row with a JSON payload through the "
            "product's pool settings (bench/floor_statements.py)."
        ),
    )


# --- 6: memory while storing a large result ----------------------------------------------------------------

# How often the worker's child processes (thumbnails of large images) have their peak RSS read.
CHILD_SAMPLE_SECONDS = 0.005
# The spec: webhook endpoints answer within 500 ms.
SPEC_WEBHOOK_ANSWER_MS = 500


async def large_result_memory(stack: BenchStack, config: BenchConfig, workers: Workers) -> list[Figure]:
    """Needs a fresh product worker; it stores one large result at a time and its peak RSS is read."""
    worker = workers.product_process()
    canvas = new_tag("memory")
    await job_completes(stack, await start_job(stack, canvas, "n-warm", provider=DOWNLOAD_PROVIDER, model="small"))
    figures = []
    for number, model in (("6a", "large-grey"), ("6b", "large-rgb")):
        before = worker.memory()
        peak_reset = worker.reset_peak()
        started = time.monotonic()
        async with descendant_peaks(worker.pid) as child_peaks:
            job_id = await start_job(stack, canvas, f"n-{model}", provider=DOWNLOAD_PROVIDER, model=model)
            await job_completes(stack, job_id)
        job_seconds = time.monotonic() - started
        after = worker.memory()
        source = stack.files.path(model)
        stored = stack.settings.local_storage_dir / "images" / canvas / f"{job_id}.png"
        if stored.stat().st_size != source.stat().st_size:
            raise BenchError(f"stored {stored.stat().st_size} bytes of a {source.stat().st_size} byte result")
        growth = (after.peak - before.rss) / MB
        size = source.stat().st_size / MB
        width, height, mode = png_shape(source)
        what = f"{width}x{height} {mode}, {thumbnail_path(stack, width * height, child_peaks)}"
        figures.append(
            Figure(
                number=number,
                title=f"memory: worker peak RSS growth storing a {size:.0f} MB result ({what})",
                unit="MB",
                product=Series.of_value(
                    "peak RSS - RSS before the job",
                    growth,
                    rssBeforeMB=before.rss / MB,
                    peakMB=after.peak / MB,
                    rssAfterMB=after.rss / MB,
                    peakResetBeforeJob=peak_reset,
                    childProcesses=len(child_peaks),
                    childPeakMB=max(child_peaks.values(), default=0) / MB,
                    storeSeconds=await activity_seconds(stack, job_id, "generate_image"),
                    jobSeconds=job_seconds,
                ),
                floors=[Series.of_value("size of the result", size)],
                method=(
                    "bench-download provider: the worker streams the PNG from a local HTTP server into local "
                    "storage (ImageIngest). VmHWM reset through /proc/<pid>/clear_refs before the job, then "
                    "read from /proc/<pid>/status after it; ratio = growth / result size. childPeakMB: the "
                    "largest VmHWM of the worker's child processes (thumbnails of large images), sampled every "
                    f"{CHILD_SAMPLE_SECONDS * 1000:.0f} ms while the job ran: a lower bound, whatever a child adds "
                    "after its last sample is missed; it is a separate process, not part of the worker's growth. "
                    "storeSeconds: start to end of the generate_image activity (download, spool, thumbnail, "
                    "upload) in the workflow history; jobSeconds: POST /v1/jobs until the SSE `completed` event."
                ),
            )
        )
    return figures


# Sides of the all-zero PNGs given as previousImage to six local jobs at once: over MAX_IMAGE_PIXELS (refused from
# the header), and within it (shrunk in a child process before the local provider draws on it).
HOSTILE_INPUT_SIDES = (("6c", 13_000, "error"), ("6d", 6_000, "completed"))
HOSTILE_INPUT_JOBS = 6
HOSTILE_INPUT_GROWTH_LIMIT_MB = 300.0


async def hostile_input_memory(stack: BenchStack, config: BenchConfig, workers: Workers) -> list[Figure]:
    """Six jobs at once refining a huge all-zero PNG: the worker's peak RSS growth against its 300 MB bound."""
    worker = workers.product_process()
    figures = []
    for number, side, expected in HOSTILE_INPUT_SIDES:
        name = f"zero-{side}.png"
        zero = io.BytesIO()
        Image.new("1", (side, side)).save(zero, format="PNG", optimize=True)
        (stack.files.directory / name).write_bytes(zero.getvalue())
        canvas = new_tag(f"hostile-{side}")
        before = worker.memory()
        peak_reset = worker.reset_peak()
        started = time.monotonic()
        job_ids = [
            await start_refinement(stack, canvas, f"n{index}", f"{stack.files_url}/{name}")
            for index in range(HOSTILE_INPUT_JOBS)
        ]
        outcomes = [await wait_for_terminal_event(stack, job_id) for job_id in job_ids]
        seconds = time.monotonic() - started
        after = worker.memory()
        if set(outcomes) != {expected}:
            raise BenchError(f"jobs refining a {side}x{side} image ended {outcomes}, not all {expected}")
        figures.append(
            Figure(
                number=number,
                title=(
                    f"memory: worker peak RSS growth, {HOSTILE_INPUT_JOBS} jobs at once refining a {side}x{side}"
                    f" all-zero PNG ({len(zero.getvalue()) / 1024:.0f} KB;"
                    f" {side * side * 4 / MB:.0f} MB decoded as RGBA): each job {expected}"
                ),
                unit="MB",
                product=Series.of_value(
                    "peak RSS - RSS before the jobs",
                    (after.peak - before.rss) / MB,
                    peakResetBeforeJobs=peak_reset,
                    seconds=seconds,
                ),
                floors=[Series.of_value("the bound (issue: under 300 MB)", HOSTILE_INPUT_GROWTH_LIMIT_MB)],
                method=(
                    f"{HOSTILE_INPUT_JOBS} local jobs started back to back, each with previousImage at the bench "
                    "file server; VmHWM reset before, read after the last terminal event. Over MAX_IMAGE_PIXELS "
                    "the jobs fail from the header alone; within it the input is shrunk in a child process."
                ),
            )
        )
    return figures


async def start_refinement(stack: BenchStack, canvas: str, node: str, previous_image: str) -> str:
    body = {
        "workflowId": canvas,
        "nodeId": node,
        "provider": "local",
        "promptSpec": {"basePrompt": f"benchmark {node}", "size": "512x512", "previousImage": previous_image},
    }
    return await post_job(stack.http, body)


def thumbnail_path(stack: BenchStack, pixels: int, child_peaks: dict[int, int]) -> str:
    """Where the thumbnail was drawn, as observed: no child process seen means the worker drew it."""
    if pixels > stack.settings.THUMBNAIL_MAX_PIXELS:
        return "over THUMBNAIL_MAX_PIXELS: no thumbnail"
    return "thumbnail drawn in a child process" if child_peaks else "thumbnail drawn in the worker"


def descendants(pid: int) -> list[int]:
    """The processes below `pid`, read from each thread's `children` file (no scan of all of /proc)."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in map(int, children.read_text().split()):
                found += [child, *descendants(child)]
    return found


@asynccontextmanager
async def descendant_peaks(pid: int) -> AsyncIterator[dict[int, int]]:
    """Peak RSS (VmHWM, bytes) of each process below `pid` while the block runs, the largest sampled per pid."""
    peaks: dict[int, int] = {}

    async def sample() -> None:
        while True:
            for child in descendants(pid):
                # A child that exited meanwhile has no /proc entry, a zombie no VmHWM.
                with contextlib.suppress(OSError, KeyError):
                    peaks[child] = max(peaks.get(child, 0), procfs.memory(child).peak)
            await asyncio.sleep(CHILD_SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    try:
        yield peaks
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler


async def activity_seconds(stack: BenchStack, workflow_id: str, activity_type: str) -> float:
    """Start to completion of the first completed `activity_type` activity, from the workflow's history."""
    names: dict[int, str] = {}
    started: dict[int, datetime] = {}
    async for event in stack.client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            names[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.HasField("activity_task_started_event_attributes"):
            started[event.event_id] = event.event_time.ToDatetime()
        elif event.HasField("activity_task_completed_event_attributes"):
            completed = event.activity_task_completed_event_attributes
            if names.get(completed.scheduled_event_id) == activity_type:
                return (event.event_time.ToDatetime() - started[completed.started_event_id]).total_seconds()
    raise BenchError(f"no completed {activity_type} activity in the history of {workflow_id}")


def png_shape(path: Path) -> tuple[int, int, str]:
    with Image.open(path) as image:
        return image.size[0], image.size[1], image.mode


# --- 7: scale ---------------------------------------------------------------------------------------------


@dataclass
class ScaleSide:
    """One side (product or floor) of the scale figure."""

    idle_rss: int
    waiting_rss: int = 0
    ingest_seconds: float = 0.0
    drain_seconds: float = 0.0
    sent_seconds: float = 0.0
    drain_peak: int = 0
    ingest_cpu: dict[str, float] = field(default_factory=dict)
    drain_cpu: dict[str, float] = field(default_factory=dict)
    failed_deliveries: list[str] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)


async def hold_waiting(
    stack: BenchStack,
    workers: Workers,
    start: Callable[[int], Awaitable[Any]],
    all_waiting: Awaitable[None],
    side: ScaleSide,
    config: BenchConfig,
) -> list[Any]:
    """Start `scale_jobs` jobs and wait until all of them wait; returns what `start` gave."""
    cpu = CpuWindow(stack, workers)
    started = time.perf_counter()
    handles = await bounded(config.scale_jobs, config.concurrency, start)
    await all_waiting
    side.ingest_seconds = time.perf_counter() - started
    side.ingest_cpu = cpu.per_item(config.scale_jobs)
    return handles


async def drain(
    stack: BenchStack,
    workers: Workers,
    process: Child,
    tag: str,
    deliver: Callable[[int], Awaitable[None]],
    side: ScaleSide,
    config: BenchConfig,
) -> None:
    """Deliver every terminal event and time until the last workflow closed; records the peak RSS meanwhile."""
    process.reset_peak()
    cpu = CpuWindow(stack, workers)
    started = time.time()
    await bounded(config.scale_jobs, config.concurrency, deliver)
    side.sent_seconds = time.time() - started
    closes = await wait_for_closed(stack, tag, config.scale_jobs, config)
    side.drain_seconds = max(close.timestamp() for close in closes) - started
    side.drain_peak = process.memory().peak
    side.drain_cpu = cpu.per_item(config.scale_jobs)


async def scale(stack: BenchStack, config: BenchConfig, workers: Workers) -> list[Figure]:
    """Needs fresh product and floor workers: their RSS idle and while `scale_jobs` jobs wait at once."""
    count, queue = config.scale_jobs, workers.floor_queue
    canvas, tag = new_tag("scale"), new_tag("scale-floor")
    product = ScaleSide(idle_rss=workers.product_process().memory().rss)
    floor = ScaleSide(idle_rss=workers.floor_process().memory().rss)

    job_ids = await hold_waiting(
        stack,
        workers,
        lambda i: start_job(stack, canvas, f"n{i}", provider=WEBHOOK_PROVIDER),
        wait_for_waiting_jobs(stack, canvas, count, config),
        product,
        config,
    )
    await asyncio.sleep(config.settle_seconds)
    product.waiting_rss = workers.product_process().memory().rss
    handles = await hold_waiting(
        stack,
        workers,
        lambda i: start_floor(stack, WaitingWorkflow.run, queue, tag, webhook_job_input(queue)),
        wait_for_waiting_floors(stack, tag, count, config),
        floor,
        config,
    )
    await asyncio.sleep(config.settle_seconds)
    floor.waiting_rss = workers.floor_process().memory().rss

    result = [f"{stack.files_url}/small.png"]
    await drain(
        stack,
        workers,
        workers.product_process(),
        canvas,
        lambda i: deliver_like_a_provider(
            partial(send_webhook, stack, job_ids[i], webhook_body("succeeded", f"done-{i}", output=result)),
            product.failed_deliveries,
            product.delivery_ms,
        ),
        product,
        config,
    )
    await drain(
        stack,
        workers,
        workers.floor_process(),
        tag,
        lambda i: handles[i].signal(WaitingWorkflow.event, FloorEvent(status="succeeded", delivery_id=f"done-{i}")),
        floor,
        config,
    )
    return scale_figures(config, product, floor)


def scale_figures(config: BenchConfig, product: ScaleSide, floor: ScaleSide) -> list[Figure]:
    count = config.scale_jobs
    rss_method = (
        f"VmRSS of each worker process after warm-up (idle) and once all {count} wait "
        f"(+{config.settle_seconds:.0f} s). Worker defaults: max_cached_workflows=1000, so beyond 1000 waiting "
        "workflows some are evicted from the cache."
    )
    return [
        Figure(
            number="7a",
            title=f"scale: worker RSS with {count} jobs waiting on webhooks",
            unit="MB",
            product=Series.of_value("product worker", product.waiting_rss / MB, count, idleMB=product.idle_rss / MB),
            floors=[Series.of_value("floor worker", floor.waiting_rss / MB, count, idleMB=floor.idle_rss / MB)],
            method=rss_method,
        ),
        Figure(
            number="7b",
            title="scale: worker RSS growth per waiting job",
            unit="KB",
            product=Series.of_value("product worker", (product.waiting_rss - product.idle_rss) / count / 1024, count),
            floors=[Series.of_value("floor worker", (floor.waiting_rss - floor.idle_rss) / count / 1024, count)],
            method=rss_method,
        ),
        Figure(
            number="7c",
            title=f"scale: time to drain {count} waiting jobs once all their webhooks arrive",
            unit="s",
            product=Series.of_value(
                "webhooks via the API, then store/node/complete",
                product.drain_seconds,
                count,
                deliveriesSentSeconds=product.sent_seconds,
                peakRssDuringDrainMB=product.drain_peak / MB,
                cpuMsPerJob=product.drain_cpu,
                failedDeliveries=len(product.failed_deliveries),
                failedDeliveryExamples=sorted(set(product.failed_deliveries))[:5],
                webhookAnswerMs={
                    "p50": percentile(product.delivery_ms, 0.5),
                    "p99": percentile(product.delivery_ms, 0.99),
                    "specGoal": SPEC_WEBHOOK_ANSWER_MS,
                },
            ),
            floors=[
                Series.of_value(
                    "signals, then 3 no-op activities",
                    floor.drain_seconds,
                    count,
                    deliveriesSentSeconds=floor.sent_seconds,
                    peakRssDuringDrainMB=floor.drain_peak / MB,
                    cpuMsPerJob=floor.drain_cpu,
                )
            ],
            method=(
                f"all deliveries sent with {config.concurrency} in flight, a failed one retried with backoff as "
                "providers do (failedDeliveries); webhookAnswerMs: each attempt's time to its answer during the "
                f"drain, beside the spec's {SPEC_WEBHOOK_ANSWER_MS} ms; drain = last workflow close time - first "
                "delivery. Each product "
                "job then downloads a 64x64 PNG from the local file server into storage."
            ),
        ),
        Figure(
            number="7d",
            title=f"scale: time until {count} new jobs all wait on their webhooks",
            unit="s",
            product=Series.of_value(
                "POST /v1/jobs, then create/mark/submit/attach",
                product.ingest_seconds,
                count,
                cpuMsPerJob=product.ingest_cpu,
            ),
            floors=[
                Series.of_value(
                    "start_workflow, then 4 no-op activities", floor.ingest_seconds, count, cpuMsPerJob=floor.ingest_cpu
                )
            ],
            method=f"{config.concurrency} start calls in flight; until every job waits (database / visibility counts).",
        ),
    ]
