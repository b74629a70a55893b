"""A worker killed with SIGKILL in the middle of a provider call: another worker finishes the job, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from tests.fixtures.stack import make_settings, running_stack
from tests.helpers import eventually


def worker_environment(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("S3_", "AWS_", "R2_"))}
    env.update(
        DATABASE_URL=settings.require_database_url(),
        TEMPORAL_ADDRESS=settings.TEMPORAL_ADDRESS,
        TASK_QUEUE=settings.TASK_QUEUE,
        APP_URL=settings.app_url,
        LOCAL_STORAGE_DIR=str(settings.local_storage_dir),
        LOCAL_PROVIDER_DELAY_MS=str(settings.LOCAL_PROVIDER_DELAY_MS),
    )
    return env


@contextmanager
def worker_process(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-m", "worker"], env=worker_environment(settings))
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.mark.timeout(120)  # a worker killed and replaced mid-call: ~20 s
async def test_kill_9_during_provider_call(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=4000)
    async with running_stack(settings, temporal_client, workers=False) as stack:
        with worker_process(settings) as first:
            started = await stack.start("survives a crash", nodeId="n-kill", promptSpec={"size": "256x256"})
            job_id = started["jobId"]
            await stack.wait(job_id, statuses=("running",), timeout=30)

            async def some_progress() -> bool:
                return bool((await stack.job(job_id)).get("progress", 0) >= 0.2)

            await eventually(some_progress, what="the job to make some progress")
            first.send_signal(signal.SIGKILL)
            first.wait()
        with worker_process(settings):
            record = await stack.wait(job_id, timeout=60)

        assert record["status"] == "completed", record
        image_dir = settings.local_storage_dir / "images" / started["workflowId"]
        images = sorted(path.name for path in image_dir.iterdir() if not path.name.endswith(".thumb.webp"))
        assert images == [f"{job_id}.png"]
        node = await stack.node(started["workflowId"], "n-kill")
        assert node["data"]["status"] == "completed"
        assert node["data"]["imageUrl"] == record["imageUrl"]
        async with db_sessions() as session:
            kinds = (
                (
                    await session.execute(
                        text("SELECT kind FROM run_events WHERE run_id = :id ORDER BY id"), {"id": job_id}
                    )
                )
                .scalars()
                .all()
            )
        assert kinds.count("completed") == 1
        assert kinds.count("created") == 1
        assert kinds[-1] == "completed"
