"""Files that nothing points to go: a drill cancels jobs at random moments, then counts the files their jobs left
and checks that the sweep deletes exactly those, and nothing of a job that completed."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from core.storage import LocalStorage, build_storage, job_key_prefix
from handoff.orphan_files import sweep_files
from tests.fixtures.stack import make_settings, running_stack


def files_of(root: Path, canvas_id: str, job_id: str) -> list[str]:
    folder = root / "images" / canvas_id
    return sorted(path.name for path in folder.glob(f"{job_id}*")) if folder.is_dir() else []


async def test_the_sweep_deletes_the_files_of_jobs_that_ended_without_a_result(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Jobs cancelled while their provider works (5 s here) end without a result, whatever they stored before.
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=5000, ORPHAN_FILES_GRACE_SECONDS=3600.0)
    canvas_id = "c-sweep-" + uuid.uuid4().hex[:8]
    rng = random.Random(7)
    async with running_stack(settings, temporal_client) as stack:
        started = [
            await stack.start(f"picture {index}", workflowId=canvas_id, nodeId=f"n{index}", promptSpec={"n": 2})
            for index in range(16)
        ]

        async def cancel_later(job_id: str) -> None:
            await stack.wait(job_id, statuses=("running",))
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            await stack.api.post(f"/v1/jobs/{job_id}/cancel")

        await asyncio.gather(*(cancel_later(job["jobId"]) for job in started[::2]))
        records = [await stack.wait(job["jobId"], timeout=60) for job in started]
    root = settings.local_storage_dir
    ended = [record["jobId"] for record in records if record["status"] in ("failed", "cancelled")]
    completed = {record["jobId"]: files_of(root, canvas_id, record["jobId"]) for record in records}
    completed = {job_id: names for job_id, names in completed.items() if job_id not in ended}
    assert ended and completed, [record["status"] for record in records]
    # What an activity that outlived its job's cancellation leaves: its outputs, stored after the end.
    storage = build_storage(settings)
    assert isinstance(storage, LocalStorage)
    source = root / "planted.png"
    source.write_bytes(b"\x89PNG\r\n\x1a\n")
    for job_id in ended[:3]:
        prefix = job_key_prefix(canvas_id, job_id)
        for key in (f"{prefix}-0.png", f"{prefix}-0.thumb.webp", f"{prefix}-1.png"):
            await storage.put_file(key, source, "image/png")
    left = {job_id: files_of(root, canvas_id, job_id) for job_id in ended}
    assert sum(len(names) for names in left.values()) >= 9

    assert await sweep_files(db_sessions, storage, older_than_seconds=3600.0) == 0, "swept within the grace period"
    async with db_sessions() as session, session.begin():
        await session.execute(
            text("UPDATE runs SET finished_at = now() - interval '2 hours' WHERE id = ANY(:ids)"), {"ids": ended}
        )
    deleted = await sweep_files(db_sessions, storage, older_than_seconds=3600.0)

    assert deleted == sum(len(names) for names in left.values())
    assert all(files_of(root, canvas_id, job_id) == [] for job_id in ended)
    assert {job_id: files_of(root, canvas_id, job_id) for job_id in completed} == completed
    assert all(len(names) == 4 for names in completed.values()), completed  # 2 images, 2 thumbnails each
    assert await sweep_files(db_sessions, storage, older_than_seconds=3600.0) == 0, "a job is swept once"
