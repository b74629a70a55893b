"""Figure 12, a webhook storm: every job of a batch waits on its provider, then all their terminal webhooks arrive
at once, many in flight, while the jobs they finish drain. The spec asks each answer to come within 500 ms.

The floor is the same storm against the bare route that commits the same delivery statement through the same pool
(bench/floors.py), for runs of its own: what the answers would cost if the API did nothing else and no job
drained behind them.

Both storms are sent with aiohttp, not the harness' httpx client: providers send from their own machines, and on
this one httpx spent about 11 ms of CPU per delivery (aiohttp 0.6 ms), twice what the API spent answering it, on
the same two cores.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.capacity import SPEC_WEBHOOK_ANSWER_MS
from bench.drive import (
    BenchConfig,
    CpuWindow,
    bounded,
    deliver_like_a_provider,
    load_generator,
    ms_since,
    new_tag,
    require_accepted,
    start_job,
    wait_for_closed,
    wait_for_waiting_jobs,
)
from bench.floors import forget_floor_runs
from bench.latency import floor_run
from bench.providers import WEBHOOK_PROVIDER, webhook_body, webhook_path
from bench.report import Figure, Series
from bench.stack import BenchStack, Workers

ANSWER_BUCKETS = "imagejobs_http_request_duration_seconds_bucket"
JSON = {"content-type": "application/json"}


async def post_accepted(load: aiohttp.ClientSession, path: str, body: bytes) -> None:
    """One delivery; anything but `200 accepted` is an error."""
    async with load.post(path, data=body, headers=JSON) as response:
        require_accepted(path, response.status, await response.text())


async def floor_answer_ms(load: aiohttp.ClientSession, run_id: str, body: bytes) -> float:
    started = time.perf_counter()
    await post_accepted(load, f"/bench/floor/webhook/{run_id}", body)
    return ms_since(started)


async def webhook_answer_buckets(stack: BenchStack) -> dict[float, float]:
    """The API's own histogram of its webhook answers so far (`le` -> answers that took at most that long)."""
    exposition = (await stack.http.get("/metrics")).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == ANSWER_BUCKETS and labels.get("route", "").startswith("/v1/webhooks/"):
                bound = float(labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def inside_the_api(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Of the storm's answers, the share the API itself took at most each bound to start (from its histogram)."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    if not total:
        return {}
    return {f"le{bound:g}s": (after[bound] - before.get(bound, 0.0)) / total for bound in (0.1, 0.5, 1.0, 2.5)}


async def webhook_storm(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    count, in_flight = config.storm_deliveries, config.storm_concurrency
    canvas, tag = new_tag("storm"), new_tag("storm-floor")
    job_ids = await bounded(
        count, config.concurrency, lambda i: start_job(stack, canvas, f"n{i}", provider=WEBHOOK_PROVIDER)
    )
    await wait_for_waiting_jobs(stack, canvas, count, config)
    route_jobs = await bounded(count, config.concurrency, lambda i: floor_run(stack, tag, f"n{i}"))
    result = [f"{stack.files_url}/small.png"]

    def terminal(index: int) -> bytes:
        return webhook_body("succeeded", f"storm-{index}", output=result)

    def deliver(load: aiohttp.ClientSession, index: int) -> Callable[[], Awaitable[None]]:
        path = webhook_path(stack.settings.WEBHOOK_SECRET, job_ids[index])
        return lambda: post_accepted(load, path, terminal(index))

    async with load_generator(stack, in_flight) as load:
        floor_ms = await bounded(count, in_flight, lambda i: floor_answer_ms(load, route_jobs[i], terminal(i)))
    await forget_floor_runs(stack.sessions)

    answer_ms: list[float] = []
    failures: list[str] = []
    histogram_before = await webhook_answer_buckets(stack)
    cpu = CpuWindow(stack, workers)
    started = time.time()
    async with load_generator(stack, in_flight) as load:
        await bounded(count, in_flight, lambda i: deliver_like_a_provider(deliver(load, i), failures, answer_ms))
    sent_seconds = time.time() - started
    answered_inside = inside_the_api(histogram_before, await webhook_answer_buckets(stack))
    closes = await wait_for_closed(stack, canvas, count, config)
    drain_seconds = max(close.timestamp() for close in closes) - started
    return Figure(
        number="12",
        title=f"webhook storm: {count} terminal webhooks, {in_flight} in flight, while their jobs drain",
        unit="ms",
        product=Series.of_samples(
            "POST /v1/webhooks/..., answered 200",
            answer_ms,
            failedDeliveries=len(failures),
            failures=sorted(set(failures))[:5],
            specGoalMs=SPEC_WEBHOOK_ANSWER_MS,
            deliveriesSentSeconds=sent_seconds,
            drainSeconds=drain_seconds,
            cpuMsPerDelivery=cpu.per_item(count),
            shareAnsweredWithinInsideApi=answered_inside,
        ),
        floors=[Series.of_samples("bare route, same INSERTs, same pool, same storm", floor_ms)],
        method=(
            f"{count} jobs of a webhook provider wait on their provider; then each gets its terminal webhook, "
            f"{in_flight} requests in flight, as a provider sends them (a failed delivery is retried with backoff, "
            "each attempt a sample). Every job then drains (stores its image, updates its node, completes) while "
            "the storm goes on. failedDeliveries counts attempts that did not get 200 accepted; drainSeconds runs "
            "from the first delivery to the last job's close. shareAnsweredWithinInsideApi: of the storm's answers, "
            "the share whose time from receipt to answer inside the API (imagejobs_http_request_duration_seconds) "
            "was within each bound; the rest of a client's wait is outside the API's handling. The floor: the "
            "same storm, before it, against the bare route that commits the same delivery statement for runs of "
            "its own (bench/floors.py)."
        ),
    )
