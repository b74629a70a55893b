"""Figure 11, fair share: one tenant's single job, from its start to `running`, while another tenant has a burst
of jobs queued, beside the same job on an idle system. Figure 11b, a capped tenant's line: how soon the next job
runs once one of the tenant's jobs ends, beside a job that finds a slot free.

The figures need tenants, so they run their own API process with ADMIN_API_KEY set (the stack's API runs
without keys), on the stack's workers, Temporal server and database.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from sqlalchemy import text

from bench.drive import IMAGE_SIZE, BenchConfig, bounded, poll, post_job
from bench.report import Figure, Series
from bench.stack import BenchStack, Workers, free_port, running_api

ADMIN_KEY = "bench-admin-key"
# How far apart the busy samples are: spread over the burst's backlog rather than all at its start.
SAMPLE_GAP_SECONDS = 0.5


@dataclass(frozen=True)
class TenantClient:
    id: str
    http: httpx.AsyncClient


@asynccontextmanager
async def tenant_api(stack: BenchStack) -> AsyncIterator[str]:
    """An API process of the same stack, with tenants turned on."""
    url = f"http://127.0.0.1:{free_port()}"
    log_dir = stack.work_dir / "tenant-api"  # its own api.log beside the stack's
    log_dir.mkdir(exist_ok=True)
    async with running_api(stack.env | {"ADMIN_API_KEY": ADMIN_KEY, "APP_URL": url}, url, log_dir):
        yield url


@asynccontextmanager
async def new_tenant(url: str, name: str, **limits: int) -> AsyncIterator[TenantClient]:
    """A tenant with a key of its own, and `limits` as PATCH /v1/tenants/{id} takes them."""
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as admin:
        tenant = (await admin.post("/v1/tenants", json={"name": name})).json()
        if limits:
            (await admin.patch(f"/v1/tenants/{tenant['id']}", json=limits)).raise_for_status()
        key = (await admin.post(f"/v1/tenants/{tenant['id']}/keys")).json()["key"]
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as http:
        yield TenantClient(tenant["id"], http)


async def start(tenant: TenantClient, canvas: str, node: str) -> str:
    body = {"workflowId": canvas, "nodeId": node, "promptSpec": {"basePrompt": f"fair {node}", "size": IMAGE_SIZE}}
    return await post_job(tenant.http, body)


_UNTIL_RUNNING = text(
    "SELECT extract(epoch FROM e.ts - r.created_at) * 1000 FROM runs r"
    " JOIN run_events e ON e.run_id = r.id AND e.kind = 'status' WHERE r.id = :id"
)
_UNFINISHED = text("SELECT count(*) FROM runs WHERE tenant_id = :tenant AND status IN ('pending', 'running')")


@dataclass(frozen=True)
class Sample:
    """One job's start to `running`, and where that time went."""

    total_ms: float
    stages_ms: dict[str, float]


_STAMPS = text(
    "SELECT extract(epoch FROM r.created_at), extract(epoch FROM r.workflow_started_at), extract(epoch FROM e.ts)"
    " FROM runs r JOIN run_events e ON e.run_id = r.id AND e.kind = 'status' WHERE r.id = :id"
)


async def stages_ms(stack: BenchStack, job_id: str) -> dict[str, float]:
    """record -> workflow started (the API's handoff) -> its first workflow task taken by a worker -> running."""
    async with stack.sessions() as session:
        created, started, running = (await session.execute(_STAMPS, {"id": job_id})).one()
    history = await stack.client.get_workflow_handle(job_id).fetch_history()
    taken = next(
        event.event_time.ToDatetime().timestamp()
        for event in history.events
        if event.HasField("workflow_task_started_event_attributes")
    )
    return {
        "handoff": round((float(started) - float(created)) * 1000, 1),
        "toWorker": round((taken - float(started)) * 1000, 1),
        "inWorker": round((float(running) - taken) * 1000, 1),
    }


async def start_to_running(stack: BenchStack, tenant: TenantClient, canvas: str, node: str, timeout: float) -> Sample:
    """Start one job and wait for it to run: milliseconds from its record (the start) to its `running` event,
    both stamped by the database."""
    job_id = await start(tenant, canvas, node)
    found: list[float] = []

    async def running() -> bool:
        async with stack.sessions() as session:
            value = (await session.execute(_UNTIL_RUNNING, {"id": job_id})).scalar_one_or_none()
        if value is not None:
            found.append(float(value))
        return value is not None

    await poll(running, f"job {job_id} to run", timeout, interval=0.02)
    return Sample(found[0], await stages_ms(stack, job_id))


def series_of(label: str, samples: list[Sample], **detail: object) -> Series:
    """Samples' totals, with where each one's time went (`stagesMs`)."""
    totals = [sample.total_ms for sample in samples]
    return Series.of_samples(label, totals, stagesMs=[sample.stages_ms for sample in samples], **detail)


async def unfinished(stack: BenchStack, tenant_id: str) -> int:
    async with stack.sessions() as session:
        return int((await session.execute(_UNFINISHED, {"tenant": tenant_id})).scalar_one())


async def fair_share(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    samples = max(3, config.latency_samples // 20)
    async with tenant_api(stack) as url, new_tenant(url, "burst") as burst, new_tenant(url, "single") as single:
        canvas = f"bench-fair-{uuid.uuid4().hex[:8]}"
        idle = [await start_to_running(stack, single, canvas, f"idle{i}", config.timeout) for i in range(samples)]
        began = time.perf_counter()
        await bounded(config.jobs, config.concurrency, lambda index: start(burst, canvas, f"burst{index}"))
        submitted_seconds = time.perf_counter() - began
        busy: list[Sample] = []
        queued: list[int] = []
        for index in range(samples):
            queued.append(await unfinished(stack, burst.id))
            busy.append(await start_to_running(stack, single, canvas, f"busy{index}", config.timeout))
            await asyncio.sleep(SAMPLE_GAP_SECONDS)
        await poll(lambda: _drained(stack, burst.id), "the burst to finish", config.timeout, interval=0.5)
    return Figure(
        number="11",
        title="fair share: a tenant's single job while another has a burst queued",
        unit="ms",
        product=series_of(
            f"start to running, another tenant's {config.jobs} jobs queued",
            busy,
            burstQueuedAtEachSample=queued,
            burstSubmitSeconds=round(submitted_seconds, 2),
        ),
        floors=[series_of("start to running, idle system", idle)],
        method=(
            f"An API process with ADMIN_API_KEY makes two tenants. The single tenant starts {samples} jobs one by "
            f"one on an idle system (the floor). The other tenant then starts {config.jobs} jobs "
            f"({config.concurrency} requests at a time), and while they are queued the single tenant starts "
            f"{samples} more, {SAMPLE_GAP_SECONDS} s apart. Each value: from the job's record (runs.created_at) to "
            "its `running` event, both database timestamps. stagesMs splits each into the API's handoff (to "
            "runs.workflow_started_at), the wait for a worker to take its first workflow task (from its history) and "
            "the steps in the worker up to `running`. Every job carries its tenant as Temporal's fairness key "
            "and the dev server runs with matching.enableFairness. burstQueuedAtEachSample: the burst's jobs not "
            "yet ended when each sample started."
        ),
    )


async def _drained(stack: BenchStack, tenant_id: str) -> bool:
    return await unfinished(stack, tenant_id) == 0


# Figure 11b: the capped tenant runs this many jobs at once.
LINE_CAP = 2
_RUNNING_AND_ENDED = text(
    "SELECT extract(epoch FROM (SELECT min(e.ts) FROM run_events e"
    "   WHERE e.run_id = r.id AND e.payload->>'status' = 'running')), extract(epoch FROM r.finished_at)"
    " FROM runs r WHERE r.id = ANY(:ids)"
)


def slot_handovers_ms(running: list[float], ended: list[float], cap: int) -> list[float]:
    """With `cap` slots, the k-th job to run (from 0) took the slot the (k - cap)-th end freed: how long after that
    end it ran, for every job that had to wait for one."""
    running, ended = sorted(running), sorted(ended)
    return [round((running[k] - ended[k - cap]) * 1000, 1) for k in range(cap, len(running))]


async def capped_line(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    samples = max(3, config.latency_samples // 20)
    jobs = config.line_jobs
    async with tenant_api(stack) as url, new_tenant(url, "capped", maxConcurrentJobs=LINE_CAP) as capped:
        canvas = f"bench-line-{uuid.uuid4().hex[:8]}"
        free = []
        for index in range(samples):  # each after the last has ended: a slot is always free
            free.append(await start_to_running(stack, capped, canvas, f"free{index}", config.timeout))
            await poll(lambda: _drained(stack, capped.id), "the job to end", config.timeout, interval=0.05)
        ids = await bounded(jobs, config.concurrency, lambda index: start(capped, canvas, f"line{index}"))
        await poll(lambda: _drained(stack, capped.id), "the line to finish", config.timeout, interval=0.2)
    async with stack.sessions() as session:
        rows = (await session.execute(_RUNNING_AND_ENDED, {"ids": ids})).all()
    handovers = slot_handovers_ms([float(row[0]) for row in rows], [float(row[1]) for row in rows], LINE_CAP)
    return Figure(
        number="11b",
        title=f"a capped tenant's line: from a job's end to the next job running (maxConcurrentJobs {LINE_CAP})",
        unit="ms",
        product=Series.of_samples(f"next in line running, {jobs} jobs started at once", handovers),
        floors=[series_of("start to running, a slot free", free)],
        method=(
            f"An API process with ADMIN_API_KEY makes a tenant with maxConcurrentJobs {LINE_CAP}. It starts "
            f"{samples} jobs one by one, each once the last has ended, so each finds a slot free (the floor: from "
            f"its record to its `running` event, through the same locked path). Then it starts {jobs} jobs at "
            f"once, local provider taking {config.provider_seconds:g} s: all but {LINE_CAP} wait in line. "
            f"With {LINE_CAP} slots the k-th job to run took the slot the "
            f"(k - {LINE_CAP})-th end freed; each value is the time from that end (runs.finished_at) to the job's "
            "`running` event, both database timestamps."
        ),
    )
