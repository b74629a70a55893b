"""Figure 10: what seeing costs. Throughput of the same batch through a worker whose metrics are served (ours and
the Temporal SDK's, scraped every second) and whose logs are JSON at INFO, against a worker with both off."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from bench.capacity import Batch, run_batch
from bench.drive import BenchConfig, job_completes, new_tag, start_job
from bench.report import Figure, Series
from bench.stack import BenchStack, Workers, free_port

# Prometheus scrapes every 15 s by default; every second is harsher than any real setup.
SCRAPE_SECONDS = 1.0
WARM_JOBS = 5


async def observability_cost(stack: BenchStack, config: BenchConfig, _: Workers) -> Figure:
    """Batches go off, on, on, off, ... (each through fresh worker processes), so that neither setting always runs
    second, on a database the other one has just grown, and the machine's drift touches both alike."""
    batches: dict[str, list[Batch]] = {"off": [], "on": []}
    for round_index in range(config.observability_rounds):
        order = ("off", "on") if round_index % 2 == 0 else ("on", "off")
        for setting in order:
            batches[setting].append(
                await seeing_batch(stack, config) if setting == "on" else await measured_batch(stack, config, {})
            )
    return Figure(
        number="10",
        title=f"throughput with metrics and JSON logs on, {config.jobs} concurrent jobs",
        unit="jobs/s",
        product=summary("metrics served and scraped every 1 s, JSON logs at INFO", batches["on"], config),
        floors=[summary("both off: no metrics served, text logs at WARNING", batches["off"], config)],
        method=(
            f"{config.observability_rounds} rounds of two batches (off then on, then on then off, ...), each "
            f"through fresh worker processes warmed with {WARM_JOBS} jobs; value = mean jobs/s of the batches. Our "
            "own counters are counted in both (they cannot be switched off); what differs is the SDK's metrics "
            "runtime, serving and scraping, and a JSON line for every INFO record. The API is one process for both."
        ),
    )


async def seeing_batch(stack: BenchStack, config: BenchConfig) -> Batch:
    """A batch through a worker with its metrics served (and scraped) and its logs JSON at INFO."""
    port = free_port()
    seeing = {
        "WORKER_METRICS_PORT": str(port),
        "WORKER_METRICS_HOST": "127.0.0.1",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
    }
    async with scraping(f"http://127.0.0.1:{port}/metrics") as scrapes:
        batch = await measured_batch(stack, config, seeing)
    if not scrapes:
        raise RuntimeError("the worker's metrics were never scraped")
    return batch


async def measured_batch(stack: BenchStack, config: BenchConfig, overrides: dict[str, str]) -> Batch:
    async with stack.workers(floor=False, **overrides) as workers:  # type: ignore[arg-type]  # (settings, str)
        warm = new_tag("seeing-warm")
        for index in range(WARM_JOBS):
            await job_completes(stack, await start_job(stack, warm, f"n{index}"))
        tag = new_tag("seeing")
        batch, _ = await run_batch(stack, config, workers, tag, lambda i: start_job(stack, tag, f"n{i}"))
        return batch


def summary(label: str, batches: list[Batch], config: BenchConfig) -> Series:
    return Series.of_value(
        label,
        statistics.fmean(batch.rate for batch in batches),
        config.jobs * len(batches),
        rates=[batch.rate for batch in batches],
        workerCpuMsPerJob=statistics.fmean(batch.cpu_ms_per_job.get("worker", 0.0) for batch in batches),
    )


@asynccontextmanager
async def scraping(url: str) -> AsyncIterator[list[int]]:
    """GET `url` every SCRAPE_SECONDS meanwhile (once it answers); yields the sizes of the scrapes so far."""
    sizes: list[int] = []

    async def scrape() -> None:
        async with httpx.AsyncClient(timeout=5) as http:
            while True:
                try:
                    sizes.append(len((await http.get(url)).content))
                except httpx.TransportError:
                    pass  # the worker is not up yet
                await asyncio.sleep(SCRAPE_SECONDS)

    task = asyncio.create_task(scrape())
    try:
        yield sizes
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
