"""Fault drills: kill and stop the parts a job depends on while jobs run, then check that nothing was lost.

Each drill ends with `assert_drill_outcome`: every job reached its right terminal state (run, node and workflow),
one image object per output, no duplicate events, and no image data in any JSON column.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from standardwebhooks.webhooks import Webhook
from temporalio.client import Client

from core.config import Settings
from core.db import session_factory
from models.tenancy import canvas_key
from tests.fakes.app import create_async_fake
from tests.fakes.app_receiver import app_receiver
from tests.fakes.async_base import REPLICATE_TOKEN, AsyncFakeState, AsyncOptions
from tests.fakes.replicate import REPLICATE_WEBHOOK_SECRET
from tests.fakes.script import Script
from tests.fakes.server import Recorder, free_port, serve
from tests.fixtures.drills import (
    ApiProcess,
    AppProcess,
    DrillJob,
    RestartablePostgres,
    RestartableS3Server,
    WebhookRelay,
    activity_attempts,
    api_process,
    assert_drill_outcome,
    drill_job,
    local_images,
    pending_activity_workers,
    run_statuses,
    s3_drill_settings,
    s3_images,
    wait_for_provider_calls,
    wait_for_terminal,
    wait_healthy,
    worker_identity_prefix,
    worker_process,
)
from tests.fixtures.s3 import s3_admin_client
from tests.fixtures.stack import Stack, make_settings, running_stack, running_workers
from tests.helpers import eventually

# Drills kill and restart processes and wait out their recovery: up to ~30 s each here, so 180 s each.
pytestmark = [pytest.mark.drill, pytest.mark.timeout(180)]

BATCH = 20
log = logging.getLogger(__name__)


async def start_batch(stack: Stack, count: int = BATCH, **fields: Any) -> list[DrillJob]:
    """`count` jobs on one fresh canvas, one node each."""
    canvas = f"drill-{uuid.uuid4().hex[:10]}"
    records = await asyncio.gather(
        *(
            stack.start(f"drill picture {index}", workflowId=canvas, nodeId=f"n{index}", **fields)
            for index in range(count)
        )
    )
    return [drill_job(record) for record in records]


async def progress_of(sessions: async_sessionmaker[AsyncSession], jobs: list[DrillJob]) -> dict[str, float]:
    async with sessions() as session:
        rows = await session.execute(
            text("SELECT id, COALESCE(CAST(payload->>'progress' AS float8), 0) FROM runs WHERE id = ANY(:ids)"),
            {"ids": [job.job_id for job in jobs]},
        )
        return dict(rows.all())


async def test_worker_killed_during_provider_calls_then_restarted(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=3000)
    async with running_stack(settings, temporal_client, workers=False) as stack:
        with worker_process(settings) as first:
            jobs = await start_batch(stack, promptSpec={"size": "256x256"})
            job_ids = [job.job_id for job in jobs]
            await wait_for_provider_calls(db_sessions, job_ids, progress=20)
            first.kill()
        # The local provider reports up to 90 % while it works; below that its call was cut short.
        cut_short = [job_id for job_id, progress in (await progress_of(db_sessions, jobs)).items() if progress < 90]
        assert cut_short
        with worker_process(settings):
            await wait_for_terminal(db_sessions, temporal_client, job_ids, timeout=90)

    for job_id in cut_short:
        attempts = await activity_attempts(temporal_client, job_id, "generate_image")
        assert [attempt for attempt, _ in attempts] == [2], (job_id, attempts)
    await assert_drill_outcome(db_sessions, temporal_client, jobs, local_images(settings.local_storage_dir))


async def test_two_workers_one_killed_the_other_finishes_every_job(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=3000)
    async with running_stack(settings, temporal_client, workers=False) as stack:
        with worker_process(settings) as first, worker_process(settings) as second:
            jobs = await start_batch(stack, promptSpec={"size": "256x256"})
            job_ids = [job.job_id for job in jobs]
            await wait_for_provider_calls(db_sessions, job_ids, progress=20)
            held_by = {job.job_id: await pending_activity_workers(temporal_client, job.job_id) for job in jobs}
            on_first = [job_id for job_id, workers in held_by.items() if owned_by(first, workers)]
            on_second = [job_id for job_id, workers in held_by.items() if owned_by(second, workers)]
            # The worker that holds more provider calls dies; the drill needs it to hold at least one.
            choices = [(first, second, on_first), (second, first, on_second)]
            victim, survivor, cut = max(choices, key=lambda choice: len(choice[2]))
            assert cut
            victim.kill()
            await wait_for_terminal(db_sessions, temporal_client, job_ids, timeout=90)

    for job_id in cut:
        attempts = await activity_attempts(temporal_client, job_id, "generate_image")
        assert len(attempts) == 1 and attempts[0][0] == 2, (job_id, attempts)
        assert attempts[0][1].startswith(worker_identity_prefix(survivor)), (job_id, attempts)
    await assert_drill_outcome(db_sessions, temporal_client, jobs, local_images(settings.local_storage_dir))


def owned_by(worker: AppProcess, identities: list[str]) -> bool:
    return any(identity.startswith(worker_identity_prefix(worker)) for identity in identities)


S3_OUTAGE_SECONDS = 20


async def test_s3_down_for_20_seconds_during_uploads(
    stack_settings: Settings,
    temporal_client: Client,
    db_sessions: async_sessionmaker[AsyncSession],
    restartable_s3: RestartableS3Server,
) -> None:
    bucket = f"drill-{uuid.uuid4().hex[:12]}"
    admin = s3_admin_client(restartable_s3.endpoint_url)
    admin.create_bucket(Bucket=bucket)
    admin.put_object(Bucket=bucket, Key="before-the-outage.txt", Body=b"kept")
    settings = s3_drill_settings(
        make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=3000), restartable_s3.endpoint_url, bucket
    )
    async with running_stack(settings, temporal_client) as stack:
        jobs = await start_batch(stack, promptSpec={"size": "256x256"})
        job_ids = [job.job_id for job in jobs]
        # Every call is still drawing, so every upload meets the outage.
        await wait_for_provider_calls(db_sessions, job_ids, progress=20)
        await asyncio.to_thread(restartable_s3.stop)
        assert restartable_s3.refuses_connections()
        await asyncio.sleep(S3_OUTAGE_SECONDS)
        assert set((await run_statuses(db_sessions, job_ids)).values()) == {"running"}
        await asyncio.to_thread(restartable_s3.start)
        await wait_for_terminal(db_sessions, temporal_client, job_ids, timeout=120)

    # A storage outage is not a provider failure: each provider call ran once, its upload waited for S3.
    for job_id in job_ids:
        attempts = await activity_attempts(temporal_client, job_id, "generate_image")
        assert [attempt for attempt, _ in attempts] == [1], (job_id, attempts)
    assert admin.get_object(Bucket=bucket, Key="before-the-outage.txt")["Body"].read() == b"kept"
    images = s3_images(restartable_s3.endpoint_url, bucket)
    await assert_drill_outcome(db_sessions, temporal_client, jobs, images)


POSTGRES_OUTAGE_SECONDS = 10


@pytest.fixture
async def drill_sessions(restartable_postgres: RestartablePostgres) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """The drill's own view of its PostgreSQL (pre-pinged, so it survives the restart)."""
    engine = create_async_engine(restartable_postgres.url, pool_pre_ping=True)
    yield session_factory(engine)
    await engine.dispose()


async def test_postgres_restarted_during_a_batch(
    stack_settings: Settings,
    temporal_client: Client,
    restartable_postgres: RestartablePostgres,
    drill_sessions: async_sessionmaker[AsyncSession],
) -> None:
    settings = make_settings(stack_settings, DATABASE_URL=restartable_postgres.url, LOCAL_PROVIDER_DELAY_MS=3000)
    async with running_stack(settings, temporal_client) as stack:
        jobs = await start_batch(stack, promptSpec={"size": "256x256"})
        job_ids = [job.job_id for job in jobs]
        await wait_for_provider_calls(drill_sessions, job_ids, progress=20)
        await asyncio.to_thread(restartable_postgres.stop)
        during = await stack.api.get(f"/v1/jobs/{job_ids[0]}")
        await asyncio.sleep(POSTGRES_OUTAGE_SECONDS)
        await asyncio.to_thread(restartable_postgres.start)
        await wait_for_terminal(drill_sessions, temporal_client, job_ids, timeout=120)
        after = await stack.api.get(f"/v1/jobs/{job_ids[0]}")

    assert during.status_code == 503, during.text
    assert during.json()["code"] == "database_unavailable"
    assert during.headers["retry-after"]
    assert after.status_code == 200, after.text
    # Progress writes failed while the database was down; the provider calls went on, each exactly once.
    for job_id in job_ids:
        attempts = await activity_attempts(temporal_client, job_id, "generate_image")
        assert [attempt for attempt, _ in attempts] == [1], (job_id, attempts)
    await assert_drill_outcome(drill_sessions, temporal_client, jobs, local_images(settings.local_storage_dir))


@dataclass
class AsyncFake:
    url: str
    recorder: Recorder
    state: AsyncFakeState


@pytest.fixture
async def storming_replicate() -> AsyncIterator[AsyncFake]:
    """The fake Replicate, every webhook sent twice, predictions taking about a second and a half."""
    recorder = Recorder()
    options = AsyncOptions(step_seconds=0.5, webhook_copies=2)
    app = create_async_fake(recorder, Script(), webhook_secret=REPLICATE_WEBHOOK_SECRET, options=options)
    async with serve(app) as url:
        try:
            yield AsyncFake(url, recorder, app.state.fake)
        finally:
            await app.state.fake.aclose()


async def test_api_killed_during_a_webhook_storm(
    stack_settings: Settings,
    temporal_client: Client,
    db_sessions: async_sessionmaker[AsyncSession],
    storming_replicate: AsyncFake,
) -> None:
    api_url = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(
        stack_settings,
        APP_URL=api_url,
        REPLICATE_API_TOKEN=REPLICATE_TOKEN,
        REPLICATE_BASE_URL=f"{storming_replicate.url}/replicate/v1",
        REPLICATE_WEBHOOK_SECRET=REPLICATE_WEBHOOK_SECRET,
        REPLICATE_RATE_PER_MINUTE=6000.0,
        DOWNLOAD_ALLOWLIST=["127.0.0.1"],
        # No polling: every outcome has to arrive as a webhook.
        WEBHOOK_GRACE_SECONDS=600.0,
        POLL_TIMEOUT_SECONDS=900.0,
    )
    relay = WebhookRelay(target_url=api_url)
    canvas = f"drill-{uuid.uuid4().hex[:10]}"
    try:
        async with (
            serve(relay.app()) as relay_url,
            api_process(settings) as api,
            running_workers(temporal_client, settings),
            httpx.AsyncClient(base_url=api_url, timeout=30) as http,
        ):
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/v1/jobs",
                        json={
                            "workflowId": canvas,
                            "nodeId": f"n{index}",
                            "provider": "replicate",
                            "webhookUrl": relay_url,
                            "promptSpec": {"basePrompt": f"storm picture {index}"},
                        },
                    )
                    for index in range(BATCH)
                )
            )
            assert [answer.status_code for answer in answers] == [202] * BATCH, answers[0].text
            jobs = [drill_job(answer.json()) for answer in answers]
            job_ids = [job.job_id for job in jobs]

            await eventually(lambda: relay.delivered >= BATCH, timeout=30, what="the storm to begin")
            api.kill()
            assert "running" in (await run_statuses(db_sessions, job_ids)).values()
            # Every prediction finishes and every callback is sent while the API is down.
            await eventually(
                lambda: _settled(storming_replicate, BATCH) and relay.failed_attempts >= BATCH,
                timeout=30,
                what="the fake to finish every prediction",
            )
            await api.start_healthy()
            await wait_for_terminal(db_sessions, temporal_client, job_ids, timeout=60)
            await eventually(lambda: relay.idle, timeout=30, what="the relay to deliver all")
    finally:
        await relay.aclose()

    assert relay.refused == []
    polls = [r for r in storming_replicate.recorder.requests if r.method == "GET" and "/predictions/" in r.path]
    assert polls == [], "the outcomes came by webhook, not by polling"
    async with db_sessions() as session:
        rows = await session.execute(
            text(
                "SELECT run_id, count(*) FROM run_events WHERE run_id = ANY(:ids) AND kind = 'webhook'"
                " AND payload->>'providerStatus' = 'succeeded' GROUP BY run_id"
            ),
            {"ids": job_ids},
        )
        assert dict(rows.all()) == dict.fromkeys(job_ids, 1)
    await assert_drill_outcome(db_sessions, temporal_client, jobs, local_images(settings.local_storage_dir))


def _settled(fake: AsyncFake, count: int) -> bool:
    predictions = fake.state.predictions.values()
    return (
        len(predictions) == count
        and not fake.state.background
        and all(prediction["status"] == "succeeded" for prediction in predictions)
    )


async def test_burst_of_keyed_starts_on_a_small_pool(stack_settings: Settings, temporal_client: Client) -> None:
    """Each request holds one database connection at a time, so a burst larger than the pool only queues."""
    settings = make_settings(stack_settings, DATABASE_POOL_SIZE=1)
    async with running_stack(settings, temporal_client, workers=False) as stack:
        body = {"workflowId": f"drill-{uuid.uuid4().hex[:10]}", "promptSpec": {"basePrompt": "burst"}}
        answers = await asyncio.wait_for(
            asyncio.gather(
                *(
                    stack.api.post("/v1/jobs", json={**body, "nodeId": f"n{index}"}, headers={"Idempotency-Key": key})
                    for index, key in enumerate(uuid.uuid4().hex for _ in range(8))
                )
            ),
            timeout=15,
        )
    assert [answer.status_code for answer in answers] == [202] * 8, answers[0].text


async def first_answers(flights: list[asyncio.Task[Any]], count: int, *, timeout: float) -> None:
    """Return once `count` of the requests in flight have their answer, or after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while sum(flight.done() for flight in flights) < count:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        await asyncio.wait(
            [flight for flight in flights if not flight.done()], timeout=left, return_when=asyncio.FIRST_COMPLETED
        )


async def post_until_answered(http: httpx.AsyncClient, body: dict[str, Any], key: str) -> httpx.Response | None:
    """One start request; None when the API died under it (the caller retries with the same key)."""
    try:
        return await http.post("/v1/jobs", json=body, headers={"Idempotency-Key": key})
    except httpx.TransportError:
        return None


async def test_api_killed_at_several_points_of_50_keyed_starts_then_all_retried(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """kill -9 of the API while 50 starts are in flight, at several moments, then every request retried with its
    own key: every job completes once, and no run is left pending without a workflow."""
    api_url = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(stack_settings, APP_URL=api_url)
    canvas = f"drill-{uuid.uuid4().hex[:10]}"
    requests = {
        f"{canvas}-key-{index}": {
            "workflowId": canvas,
            "nodeId": f"n{index}",
            "promptSpec": {"basePrompt": f"start path picture {index}", "size": "64x64"},
        }
        for index in range(50)
    }
    answered: dict[str, httpx.Response] = {}
    cut_short: list[int] = []
    async with (
        api_process(settings) as api,
        running_workers(temporal_client, settings),
        httpx.AsyncClient(base_url=api_url, timeout=30) as http,
    ):
        # Each kill comes at its moment, or once so many answers are in if that is sooner: on a quick machine a
        # warm API answers all 50 within 0.25 s, and a kill after the last answer would cut nothing short.
        for kill_after, answers_before_kill in ((0.02, 1), (0.08, 5), (0.25, 20)):
            pending = {key: body for key, body in requests.items() if key not in answered}
            flights = [asyncio.create_task(post_until_answered(http, body, key)) for key, body in pending.items()]
            await first_answers(flights, answers_before_kill, timeout=kill_after)
            api.kill()
            answers = await asyncio.gather(*flights)
            cut_short.append(sum(answer is None for answer in answers))
            for key, answer in zip(pending, answers, strict=True):
                if answer is not None and answer.status_code == 202:
                    answered[key] = answer
            await api.start_healthy()
        assert all(cut_short), f"every kill must cut requests short, cut: {cut_short}"
        # Every request retried with its own key until it is answered.
        for key, body in requests.items():
            answer = await post_until_answered(http, body, key)
            assert answer is not None and answer.status_code == 202, answer.text if answer else "no answer"
            if key in answered:
                assert answer.json()["jobId"] == answered[key].json()["jobId"]
                assert answer.headers["idempotent-replayed"] == "true"
            answered[key] = answer
        jobs = [drill_job(answer.json()) for answer in answered.values()]
        assert len({job.job_id for job in jobs}) == len(requests)
        await wait_for_terminal(db_sessions, temporal_client, [job.job_id for job in jobs], timeout=120)
    await assert_drill_outcome(db_sessions, temporal_client, jobs, local_images(settings.local_storage_dir))


async def test_worker_killed_during_a_canvas_run_then_restarted_finishes_it_without_a_second_job(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=2500, DOWNLOAD_ALLOWLIST=["127.0.0.1"])
    canvas_id = f"drill-run-{uuid.uuid4().hex[:8]}"
    names = ("A", "B", "C", "D", "E")
    nodes = [{"id": key, "type": "image_generation", "data": {"prompt": f"picture {key}"}} for key in names]
    edges = [{"id": f"{s}-{t}", "source": s, "target": t} for s, t in (("A", "B"), ("B", "C"), ("A", "D"))]
    async with running_stack(settings, temporal_client, workers=False) as stack:
        saved = await stack.api.put(f"/v1/canvases/{canvas_id}", json={"nodes": nodes, "edges": edges})
        assert saved.status_code == 200, saved.text
        with worker_process(settings) as first:
            run = (await stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={})).json()
            run_path = f"/v1/canvases/{canvas_id}/runs/{run['runId']}"
            # Kill it once A is done and B and D are being drawn (their provider calls under way).
            await eventually(lambda: node_is_running(stack, run_path, "B"), timeout=30, what="B to run")
            first.kill()
        with worker_process(settings):
            await eventually(lambda: run_has_ended(stack, run_path), timeout=90, what="the run to end")
        final = await run_view(stack, run_path)
    assert final["status"] == "completed", final
    assert {node["state"] for node in final["nodes"]} == {"completed"}
    job_ids = {node["nodeId"]: node["jobId"] for node in final["nodes"]}
    async with db_sessions() as session:
        per_node = dict(
            (
                await session.execute(
                    text("SELECT node_id, count(*) FROM runs WHERE canvas_id = :c GROUP BY node_id"), {"c": canvas_id}
                )
            ).all()
        )
    assert per_node == dict.fromkeys(names, 1)  # one job per node: none was started twice
    stored = local_images(settings.local_storage_dir)(canvas_id)
    for node, job_id in job_ids.items():
        assert len([name for name in stored if name.startswith(job_id)]) == 1, (node, stored)  # one image per job
    children = 0
    async for event in temporal_client.get_workflow_handle(run["runId"]).fetch_history_events():
        children += event.HasField("start_child_workflow_execution_initiated_event_attributes")
    assert children == len(names)


async def run_view(stack: Stack, path: str) -> dict[str, Any]:
    view: dict[str, Any] = (await stack.api.get(path)).json()
    return view


async def node_is_running(stack: Stack, path: str, node_id: str) -> bool:
    return any(
        node["nodeId"] == node_id and node["state"] == "running" for node in (await run_view(stack, path))["nodes"]
    )


async def run_has_ended(stack: Stack, path: str) -> bool:
    return (await run_view(stack, path))["status"] != "running"


async def post_run_until_answered(http: httpx.AsyncClient, canvas_id: str) -> httpx.Response | None:
    """One run start; None when the API died under it."""
    try:
        return await http.post(f"/v1/canvases/{canvas_id}/runs", json={})
    except httpx.TransportError:
        return None


async def test_api_killed_during_20_run_starts_every_run_and_node_ends(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """kill -9 of the API 0.25 s into 20 concurrent run starts, and no retry: the workers' sweep starts every run
    the dead process committed, so every run ends and no node of any board is left pending."""
    api_url = f"http://127.0.0.1:{free_port()}"
    settings = make_settings(
        stack_settings,
        APP_URL=api_url,
        LOCAL_PROVIDER_DELAY_MS=0,
        DOWNLOAD_ALLOWLIST=["127.0.0.1"],
        HANDOFF_GRACE_SECONDS=1.0,
        SWEEP_INTERVAL_SECONDS=0.5,
    )
    prefix = f"drill-runs-{uuid.uuid4().hex[:8]}"
    boards = [f"{prefix}-{index}" for index in range(20)]
    nodes = [{"id": key, "type": "image_generation", "data": {"prompt": f"picture {key}"}} for key in "ABC"]
    edges = [{"id": "A-B", "source": "A", "target": "B"}]
    async with api_process(settings) as api, httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        for canvas_id in boards:
            saved = await http.put(f"/v1/canvases/{canvas_id}", json={"nodes": nodes, "edges": edges})
            assert saved.status_code == 200, saved.text
        flights = [asyncio.create_task(post_run_until_answered(http, canvas_id)) for canvas_id in boards]
        # Killed 0.25 s in, or as the first answer arrives if that is sooner: either way starts are cut short,
        # and the answered runs' workflows, started only after the answer, may not be.
        await asyncio.wait(flights, timeout=0.25, return_when=asyncio.FIRST_COMPLETED)
        api.kill()
        answers = await asyncio.gather(*flights)
        assert any(answer is None for answer in answers), "the kill must cut starts short"
        async with db_sessions() as session:
            unstarted = (
                await session.execute(
                    text("SELECT count(*) FROM canvas_runs WHERE canvas_id LIKE :p AND workflow_started_at IS NULL"),
                    {"p": f"{prefix}-%"},
                )
            ).scalar_one()
        assert unstarted > 0, "the kill left no run for the sweep to start"
        await api.start_healthy()  # back for what refinements download (/files); it starts no run by itself

        async def every_run_ended() -> bool:
            async with db_sessions() as session:
                found = await session.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE finished_at IS NULL), count(*) FROM canvas_runs"
                        " WHERE canvas_id LIKE :p"
                    ),
                    {"p": f"{prefix}-%"},
                )
                unfinished, total = found.one()
            return total > 0 and unfinished == 0

        async with running_workers(temporal_client, settings):
            await eventually(every_run_ended, timeout=120, what="every committed run to end")
    async with db_sessions() as session:
        runs = (
            await session.execute(
                text("SELECT id, status, workflow_started_at IS NOT NULL FROM canvas_runs WHERE canvas_id LIKE :p"),
                {"p": f"{prefix}-%"},
            )
        ).all()
        pending_nodes = (
            await session.execute(
                text(
                    "SELECT canvas_id, id, node_data->>'runState', node_data->>'status' FROM workflow_nodes"
                    " WHERE canvas_id LIKE :p AND (node_data->>'runState' IN ('pending', 'running')"
                    "   OR node_data->>'status' IN ('pending', 'running'))"
                ),
                {"p": f"{prefix}-%"},
            )
        ).all()
    answered = [answer.json()["runId"] for answer in answers if answer is not None and answer.status_code == 202]
    assert set(answered) <= {run_id for run_id, _, _ in runs}, "an answered run was lost"
    assert {status for _, status, _ in runs} == {"completed"}, runs
    assert all(started for _, _, started in runs)
    assert pending_nodes == []


def peak_rss_mb(pid: int) -> float:
    """The process's resident-set high-water mark (Linux: VmHWM), in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    (line,) = [line for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


def zero_png(side: int) -> bytes:
    """A side x side all-zero PNG: tiny on disk, side * side * 4 bytes once decoded as RGBA."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("side", "outcome"), [(13_000, "failed"), (6_000, "completed")], ids=["over-the-budget", "within-the-budget"]
)
async def test_six_jobs_refining_a_huge_image_keep_the_worker_small(
    side: int, outcome: str, stack_settings: Settings, temporal_client: Client
) -> None:
    """Six local jobs at once whose previousImage is a side x side zero PNG (13000: 657 KB, 676 MB decoded; 6000:
    144 MB decoded): over MAX_IMAGE_PIXELS each fails at once, from the header alone; within it each completes,
    its input shrunk in a child process. Either way the worker's peak RSS grows by under 300 MB."""
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=0, DOWNLOAD_ALLOWLIST=["127.0.0.1"])
    key = f"inputs/zero-{side}-{uuid.uuid4().hex[:6]}.png"
    (settings.local_storage_dir / key).parent.mkdir(parents=True, exist_ok=True)
    (settings.local_storage_dir / key).write_bytes(zero_png(side))
    async with running_stack(settings, temporal_client, workers=False) as stack:
        with worker_process(settings) as worker:
            warm = await stack.start("warming up", promptSpec={"size": "256x256"})
            assert (await stack.wait(warm["jobId"], timeout=60))["status"] == "completed"
            before = peak_rss_mb(worker.pid)
            started = [
                await stack.start(
                    f"refine {index}",
                    nodeId=f"n{index}",
                    promptSpec={"size": "512x512", "previousImage": f"{settings.app_url}/files/{key}"},
                )
                for index in range(6)
            ]
            records = [await stack.wait(job["jobId"], timeout=120) for job in started]
            growth = peak_rss_mb(worker.pid) - before
    assert [record["status"] for record in records] == [outcome] * 6, records
    if outcome == "failed":
        for record in records:
            assert record["errorCode"] == "InvalidProviderRequest", record
            assert "megapixel" in record["error"], record
    assert growth < 300, f"the worker's peak RSS grew by {growth:.0f} MB"


async def delivery_waiting(stack: Stack, client: Client, endpoint_id: str) -> Callable[[], Awaitable[bool]]:
    """Whether the endpoint's delivery waits on its retry timer (its workflow's history has started one)."""

    async def waiting() -> bool:
        listed = (await stack.api.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries")).json()["items"]
        if not listed:
            return False
        history = await client.get_workflow_handle(listed[0]["id"]).fetch_history()
        return any(event.HasField("timer_started_event_attributes") for event in history.events)

    return waiting


async def test_worker_killed_between_two_webhook_attempts_the_delivery_still_arrives_once_per_attempt(
    stack_settings: Settings, temporal_client: Client
) -> None:
    """The endpoint answers 500, the worker is killed -9 while the delivery waits for its second attempt, and a new
    worker makes that attempt on schedule: two requests in all, one webhook-id, the second one delivered."""
    settings = make_settings(
        stack_settings,
        OUTBOUND_ALLOWLIST=["127.0.0.1"],
        OUTBOUND_WEBHOOK_RETRY_SECONDS=["0", "6", "1"],
        LOCAL_PROVIDER_DELAY_MS=0,
    )
    async with app_receiver() as receiver, running_stack(settings, temporal_client, workers=False) as stack:
        created = await stack.api.post("/v1/webhook-endpoints", json={"url": receiver.url})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        receiver.answer(500)
        try:
            with worker_process(settings) as first:
                job = await stack.start("a kite over the dunes")
                await eventually(lambda: len(receiver.recorder.requests) >= 1, timeout=60, what="the first attempt")
                # Killed once the first attempt is over and the delivery waits for the second (its timer started):
                # a kill inside the attempt would leave it to its 60 s timeout instead, and make a third request.
                waiting = await delivery_waiting(stack, temporal_client, endpoint["id"])
                await eventually(waiting, timeout=60, what="the delivery to wait for its second attempt")
                first.kill()
            with worker_process(settings):
                await eventually(lambda: len(receiver.recorder.requests) >= 2, timeout=60, what="the second attempt")
                await asyncio.sleep(2.0)  # a third request, were one sent twice, would be here by now

                async def delivered() -> bool:
                    listed = await stack.api.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")
                    return any(item["status"] == "delivered" for item in listed.json()["items"])

                await eventually(delivered, timeout=30, what="the delivery to be logged as delivered")
        finally:
            await stack.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    requests = receiver.recorder.requests
    assert len(requests) == 2, [request.headers.get("webhook-id") for request in requests]
    assert len({request.headers["webhook-id"] for request in requests}) == 1
    assert requests[1].at - requests[0].at >= 5.5, "the second attempt keeps its schedule across the restart"
    for request in requests:
        body = Webhook(endpoint["secret"]).verify(request.body, request.headers)
        assert (body["type"], body["data"]["jobId"]) == ("job.completed", job["jobId"])


# --- several processes, two tenants --------------------------------------------------------------------------------

DRILL_ADMIN_KEY = "drill-admin-key"
JOBS_PER_TENANT = 150
SHARED_CANVAS = "shared-board"  # both tenants name their board the same


@dataclass
class DrillTenant:
    id: str
    key: str
    jobs: dict[str, str]  # Idempotency-Key -> job id, as answered


async def make_drill_tenant(api_url: str, name: str) -> DrillTenant:
    admin = {"Authorization": f"Bearer {DRILL_ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=api_url, timeout=10, headers=admin) as http:
        tenant = (await http.post("/v1/tenants", json={"name": name})).json()
        key = (await http.post(f"/v1/tenants/{tenant['id']}/keys", json={"name": "drill"})).json()["key"]
    return DrillTenant(tenant["id"], key, {})


async def start_on_any_api(api_urls: list[str], tenant: DrillTenant, index: int) -> None:
    """One keyed start, tried on each API in turn (one may be dead) until one answers 202."""
    body = {
        "workflowId": SHARED_CANVAS,
        "nodeId": f"n{index}",
        "promptSpec": {"basePrompt": f"tenant picture {index}", "size": "64x64"},
    }
    key = f"{tenant.id}-{index}"
    headers = {"Authorization": f"Bearer {tenant.key}", "Idempotency-Key": key}
    for attempt in range(400):
        url = api_urls[(index + attempt) % len(api_urls)]
        try:
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                answer = await http.post("/v1/jobs", json=body, headers=headers)
        except httpx.TransportError:
            answer = None
        if answer is not None and answer.status_code == 202:
            job_id = answer.json()["jobId"]
            assert tenant.jobs.setdefault(key, job_id) == job_id, "a repeat of a key answered another job"
            return
        assert answer is None or answer.status_code >= 500, answer.text
        await asyncio.sleep(0.2)
    raise AssertionError(f"start {key} was never answered")


async def kill_one_every_few_seconds(processes: list[AppProcess], stop: asyncio.Event, kills: list[str]) -> None:
    """kill -9 a random process (an API or a worker) every 2 to 4 s, and start it again at once (it may be killed
    again while it starts), until `stop`."""
    chance = random.Random(24)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=chance.uniform(2.0, 4.0))
        if stop.is_set():
            return
        victim = chance.choice(processes)
        victim.kill()
        kills.append("api" if isinstance(victim, ApiProcess) else "worker")
        victim.start()


@pytest.mark.timeout(420)
async def test_two_tenants_on_two_apis_and_three_workers_with_a_process_killed_every_few_seconds(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """300 jobs of two tenants (both on a board named the same) through 2 API processes and 3 worker processes,
    one of the five killed with SIGKILL every few seconds: every job ends once, completed, with its one image;
    neither tenant sees the other's jobs; nothing is left in the handoff."""
    api_urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    base = make_settings(
        stack_settings,
        ADMIN_API_KEY=DRILL_ADMIN_KEY,
        LOCAL_PROVIDER_DELAY_MS=300,
        SWEEP_INTERVAL_SECONDS=2.0,
        HANDOFF_GRACE_SECONDS=3.0,
    )
    stop, kills = asyncio.Event(), []
    began = asyncio.get_running_loop().time()
    async with contextlib.AsyncExitStack() as processes:
        apis = [await processes.enter_async_context(api_process(make_settings(base, APP_URL=url))) for url in api_urls]
        workers = [processes.enter_context(worker_process(base)) for _ in range(3)]
        tenants = [await make_drill_tenant(api_urls[0], name) for name in ("Acme", "Globex")]
        killer = asyncio.create_task(kill_one_every_few_seconds([*apis, *workers], stop, kills))
        try:
            starts = [
                start_on_any_api(api_urls, tenant, index) for index in range(JOBS_PER_TENANT) for tenant in tenants
            ]
            await bounded_gather(starts, limit=16)
            job_ids = [job_id for tenant in tenants for job_id in tenant.jobs.values()]
            assert len(set(job_ids)) == 2 * JOBS_PER_TENANT
            await wait_for_terminal(db_sessions, temporal_client, job_ids, timeout=300)
        finally:
            stop.set()
            await killer
        assert {"api", "worker"} <= set(kills) and len(kills) >= 5, f"the drill killed too little: {kills}"
        seconds = asyncio.get_running_loop().time() - began
        log.info("%d jobs ended in %.0f s, %d processes killed: %s", len(job_ids), seconds, len(kills), sorted(kills))
        await wait_healthy(api_urls[0])
        await assert_tenants_see_only_their_own(api_urls[0], tenants)

    jobs = [
        DrillJob(job_id, canvas_key(tenant.id, SHARED_CANVAS), f"n{key.rsplit('-', 1)[1]}")
        for tenant in tenants
        for key, job_id in tenant.jobs.items()
    ]
    await assert_drill_outcome(db_sessions, temporal_client, jobs, local_images(base.local_storage_dir))
    async with db_sessions() as session:
        unstarted = await session.execute(
            text("SELECT count(*) FROM runs WHERE id = ANY(:ids) AND workflow_started_at IS NULL"), {"ids": job_ids}
        )
        assert unstarted.scalar_one() == 0, "a run's start was left to the handoff"


async def bounded_gather(calls: list[Awaitable[None]], *, limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(call: Awaitable[None]) -> None:
        async with semaphore:
            await call

    await asyncio.gather(*(one(call) for call in calls))


async def assert_tenants_see_only_their_own(api_url: str, tenants: list[DrillTenant]) -> None:
    for tenant, other in (tenants, tenants[::-1]):
        async with httpx.AsyncClient(
            base_url=api_url, timeout=10, headers={"Authorization": f"Bearer {tenant.key}"}
        ) as http:
            listed: set[str] = set()
            cursor: str | None = None
            while True:
                query = {"workflowId": SHARED_CANVAS, "limit": 200} | ({"cursor": cursor} if cursor else {})
                page = (await http.get("/v1/jobs", params=query)).json()
                listed |= {item["jobId"] for item in page["items"]}
                cursor = page.get("nextCursor")
                if not cursor:
                    break
            assert listed == set(tenant.jobs.values()), "a tenant's list is not exactly its own jobs"
            board = (await http.get(f"/v1/canvases/{SHARED_CANVAS}/nodes")).json()["items"]
            assert {node["data"].get("jobId") for node in board} == set(tenant.jobs.values())
            for job_id in list(other.jobs.values())[:20]:
                assert (await http.get(f"/v1/jobs/{job_id}")).status_code == 404
