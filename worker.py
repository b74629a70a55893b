"""The Temporal worker process: the job workflow, run bookkeeping, and one rate-limited queue per provider.

Only this module wires clients into activity classes: they receive them, they never build them.
Start it with `imagejobs worker`; run as many as you like on any number of machines on one Temporal cluster.
"""

from __future__ import annotations

import asyncio
import compileall
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import workflows
from activities.generation import HEARTBEAT_EVERY, GenerationActivities
from activities.log_context import JobLogContext
from activities.outbound import OutboundActivities
from activities.runs import CanvasRunActivities, RunActivities
from core.config import Settings, get_settings, warn_about_lookalikes
from core.db import autocommit_session_factory, create_engine, session_factory, transaction
from core.logs import configure_logging
from core.metrics import HANDOFF_BACKLOG, JOBS_WAITING_FOR_SLOT
from core.storage import ObjectStorage, build_storage
from core.temporal import connect, ensure_search_attributes, worker_runtime
from core.tracing import install_tracing
from core.worker_metrics import serve_worker_metrics
from handoff.ends import end_vanished
from handoff.orphan_files import ABANDONED_WRITES_EVERY_SECONDS, sweep_abandoned_writes, sweep_files
from handoff.starts import job_from_run
from handoff.sweep import TRANSIENT_ERRORS, OutboundStarter, backlog, sweep
from models.payloads import ImageJobInput
from models.tables import Run
from providers.base import ImageProvider
from providers.discovery import build_directory, discover_at_start, keep_discovering
from providers.registry import build_providers
from store import deliveries, outbound, tenants
from store.pacing import ProviderPacer
from workflows.canvas_run import CanvasRunWorkflow
from workflows.image_job import ImageJobWorkflow, provider_task_queue
from workflows.outbound_webhook import OutboundWebhookWorkflow
from workflows.provider_cancel import ProviderCancelWorkflow

log = logging.getLogger(__name__)


@dataclass
class WorkerResources:
    """Long-lived clients shared by every activity of the process."""

    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    autocommit_sessions: async_sessionmaker[AsyncSession]  # for steps that are one statement, atomic by itself
    storage: ObjectStorage
    http: httpx.AsyncClient
    providers: dict[str, ImageProvider]


def provider_http_client(settings: Settings) -> httpx.AsyncClient:
    """One pooled client for every provider call and result download (redirects are checked by ingest)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.PROVIDER_TIMEOUT_SECONDS, connect=10.0),
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        follow_redirects=False,
    )


def worker_engine(settings: Settings) -> AsyncEngine:
    """The worker's pool, without a ping per checkout: every database step is retried by Temporal (and the sweep
    runs again), so a connection a database restart left stale costs one attempt, not a job, and the ping would
    cost a round trip on every step of every job."""
    return create_engine(settings, pre_ping=False)


@asynccontextmanager
async def worker_resources(settings: Settings) -> AsyncIterator[WorkerResources]:
    engine = worker_engine(settings)
    storage = build_storage(settings)
    http = provider_http_client(settings)
    try:
        yield WorkerResources(
            engine=engine,
            sessions=session_factory(engine),
            autocommit_sessions=autocommit_session_factory(engine),
            storage=storage,
            http=http,
            providers=build_providers(settings, http),
        )
    finally:
        await http.aclose()
        await storage.aclose()
        await engine.dispose()


def generation_activities(settings: Settings, resources: WorkerResources) -> GenerationActivities:
    """The provider activities, with the clients they are given."""
    return GenerationActivities(
        providers=resources.providers,
        storage=resources.storage,
        http=resources.http,
        sessions=resources.sessions,
        settings=settings,
        pacer=ProviderPacer(resources.sessions),
    )


def cache_workflow_bytecode() -> None:
    """Temporal's sandbox runs a workflow's module afresh for every workflow it starts. Without cached bytecode
    (PYTHONDONTWRITEBYTECODE, which the image sets, or a fresh checkout) that means compiling the module each
    time: about 3 ms of the worker's CPU per job. So the workflows' bytecode is written once, here; the image
    writes it when it is built, and a read-only tree without it just runs as before."""
    if not compileall.compile_dir(Path(workflows.__file__).parent, quiet=2):
        log.debug("could not write the workflows' bytecode; the sandbox compiles them per workflow")


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """Temporal's sandbox when WORKFLOW_SANDBOX is on (core/config.py says when), otherwise none."""
    if not settings.WORKFLOW_SANDBOX:
        return UnsandboxedWorkflowRunner()
    cache_workflow_bytecode()
    return SandboxedWorkflowRunner()


def build_workers(client: Client, settings: Settings, resources: WorkerResources) -> list[Worker]:
    """The main queue (workflows and database steps) plus one queue per enabled provider."""
    starter = OutboundStarter(client, settings, resources.sessions)
    run_steps = RunActivities(
        resources.sessions,
        starter,
        autocommit_sessions=resources.autocommit_sessions,
        default_max_concurrent=settings.TENANT_MAX_CONCURRENT_JOBS,
        client=client,
    )
    canvas_steps = CanvasRunActivities(resources.sessions, starter)
    outbound_steps = OutboundActivities(resources.sessions, resources.http, settings)
    generation = generation_activities(settings, resources)
    workers = [
        Worker(
            client,
            task_queue=settings.TASK_QUEUE,
            interceptors=[JobLogContext()],
            workflows=[ImageJobWorkflow, CanvasRunWorkflow, OutboundWebhookWorkflow, ProviderCancelWorkflow],
            workflow_runner=workflow_runner(settings),
            # Few at once, so a backlog waits in Temporal, where tenants get their fair share (core/config.py); the
            # database steps run as local activities inside those workflow tasks, so they get as many slots.
            max_concurrent_workflow_tasks=settings.WORKER_MAX_CONCURRENT_WORKFLOW_TASKS,
            max_concurrent_local_activities=settings.WORKER_MAX_CONCURRENT_WORKFLOW_TASKS,
            activities=[
                run_steps.create_run,
                run_steps.mark_running,
                run_steps.wait_for_running_slot,
                run_steps.attach_provider_job,
                run_steps.record_progress,
                run_steps.update_node,
                run_steps.complete_run,
                run_steps.fail_run,
                run_steps.cancel_run,
                canvas_steps.record_node_state,
                canvas_steps.finish_canvas_run,
                outbound_steps.attempt_delivery,
            ],
        )
    ]
    for name, provider in resources.providers.items():
        reason = provider.disabled_reason()
        if reason:
            log.info("provider %s disabled: %s", name, reason)
            continue
        rate = provider.rate_limit_per_minute()
        workers.append(
            Worker(
                client,
                task_queue=provider_task_queue(settings.TASK_QUEUE, name),
                interceptors=[JobLogContext()],
                activities=[
                    generation.generate_image,
                    generation.submit_job,
                    generation.poll_job,
                    generation.store_outputs,
                    generation.cancel_at_provider,
                ],
                max_task_queue_activities_per_second=rate / 60 if rate else None,
                # A provider job id rides on heartbeats so a retried attempt resumes that job; send them promptly
                # rather than at the default 80 % of the heartbeat timeout.
                max_heartbeat_throttle_interval=HEARTBEAT_EVERY,
            )
        )
    return workers


def workflow_input(settings: Settings, resources: WorkerResources, run: Run) -> ImageJobInput | None:
    """The workflow input of a recorded run; None when this worker has no such provider."""
    provider = resources.providers.get(run.provider)
    if provider is None:
        return None
    return job_from_run(run, asynchronous=provider.asynchronous, settings=settings, webhooks=provider.supports_webhooks)


async def sweep_once(client: Client, settings: Settings, resources: WorkerResources) -> int:
    """Start the runs and send the signals API processes left behind (handoff/sweep.py); returns how many."""
    return await sweep(client, settings, resources.sessions, partial(workflow_input, settings, resources))


async def count_what_waits(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Set the gauges of what waits: the handoff's backlog by kind, and the jobs in tenants' lines for a slot."""
    for kind, count in (await backlog(sessions)).items():
        HANDOFF_BACKLOG.labels(kind=kind).set(count)
    async with sessions() as session:
        JOBS_WAITING_FOR_SLOT.set(await tenants.count_in_line(session))


async def keep_sweeping(client: Client, settings: Settings, resources: WorkerResources) -> None:
    """The worker's housekeeping: what the API left undone gets done, jobs whose workflows are gone get ended, old
    webhook refusals go, and so do the files of jobs that ended without a result, and what killed writes left half
    done."""
    walk_storage_at = 0.0
    while True:
        try:
            await sweep_once(client, settings, resources)
            await end_vanished(client, settings, resources.sessions)
            await count_what_waits(resources.sessions)
            async with transaction(resources.sessions) as session:
                await deliveries.prune_refusals(session)
                await outbound.prune(session)
            await sweep_files(
                resources.sessions, resources.storage, older_than_seconds=settings.ORPHAN_FILES_GRACE_SECONDS
            )
            if time.monotonic() >= walk_storage_at:
                walk_storage_at = time.monotonic() + ABANDONED_WRITES_EVERY_SECONDS
                await sweep_abandoned_writes(resources.storage, older_than_seconds=settings.ORPHAN_FILES_GRACE_SECONDS)
        except TRANSIENT_ERRORS as error:
            log.warning("the sweep failed, trying again later: %s", error)
        except Exception:  # housekeeping must outlive any one bad row
            log.exception("the sweep failed, trying again later")
        await asyncio.sleep(settings.SWEEP_INTERVAL_SECONDS)


async def connect_worker_client(settings: Settings) -> Client:
    """The worker process' Temporal client: its metrics and the SDK's served on WORKER_METRICS_PORT when set, and
    its spans exported when tracing is on."""
    sdk_metrics_port = None
    if settings.WORKER_METRICS_PORT is not None:
        sdk_metrics_port = serve_worker_metrics(settings.WORKER_METRICS_HOST, settings.WORKER_METRICS_PORT)
    install_tracing(settings, "imagejobs-worker")
    return await connect(settings, worker_runtime(sdk_metrics_port))


async def run_worker(settings: Settings) -> None:
    """Connect, register search attributes, and run every worker (and the sweep) until cancelled."""
    warn_about_lookalikes()
    client = await connect_worker_client(settings)
    await ensure_search_attributes(client)
    async with worker_resources(settings) as resources:
        workers = build_workers(client, settings, resources)
        log.info("worker polling %s", ", ".join(worker.task_queue for worker in workers))
        # The worker shares what the providers list (for the API processes and the logs), as the API does.
        directory = build_directory(settings)
        await discover_at_start(directory, resources.providers, resources.sessions, settings)
        await asyncio.gather(
            *(worker.run() for worker in workers),
            keep_sweeping(client, settings, resources),
            keep_discovering(directory, resources.providers, resources.sessions, settings),
        )


def main() -> None:
    settings = get_settings()
    configure_logging(settings.LOG_FORMAT, settings.LOG_LEVEL)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
