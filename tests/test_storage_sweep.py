"""Files that nothing points to go: a drill cancels jobs at random moments, then counts the files their jobs left
and checks that the sweep deletes exactly those, and nothing of a job that completed. What a killed write left
unfinished goes too, once it has aged, in a directory and in a bucket."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from core.storage import LocalStorage, S3Storage, build_storage, job_key_prefix
from handoff.orphan_files import sweep_abandoned_writes, sweep_files
from tests.fixtures.s3 import s3_admin_client
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


async def test_part_files_a_killed_write_left_go_once_aged_and_nothing_else(local_settings: Settings) -> None:
    storage = LocalStorage(local_settings.local_storage_dir, "http://files.test/files")
    folder = local_settings.local_storage_dir / "tenants" / "t_1" / "images" / "canvas-1"
    folder.mkdir(parents=True)
    two_hours_ago = time.time() - 7200
    files = {
        "abandoned": folder / ".job_1.png.k3j2h1.part",
        "being written": folder / ".job_2.png.9f8e7d.part",
        "stored image": folder / "job_3.png",
        "someone's hidden file": folder / ".keep",
    }
    for path in files.values():
        path.write_bytes(b"\x89PNG")
    for name in ("abandoned", "stored image", "someone's hidden file"):
        os.utime(files[name], (two_hours_ago, two_hours_ago))

    assert await sweep_abandoned_writes(storage, older_than_seconds=3600) == 1
    assert {name for name, path in files.items() if path.exists()} == {
        "being written",
        "stored image",
        "someone's hidden file",
    }
    assert await sweep_abandoned_writes(storage, older_than_seconds=3600) == 0


async def test_multipart_uploads_a_killed_write_left_are_aborted_and_stored_objects_stay(
    s3_settings: Settings, tmp_path: Path
) -> None:
    bucket = s3_settings.S3_BUCKET
    admin = s3_admin_client(s3_settings.S3_ENDPOINT_URL or "")
    key = "images/canvas-1/job_1.png"
    begun = admin.create_multipart_upload(Bucket=bucket, Key=key)
    admin.upload_part(Bucket=bucket, Key=key, UploadId=begun["UploadId"], PartNumber=1, Body=b"x")
    admin.create_multipart_upload(Bucket=bucket, Key="another-app/video.mp4")  # a shared bucket's: not ours
    # moto reports every upload as begun on 2010-11-10, so these are old; the age rule is the local test's.
    assert admin.list_multipart_uploads(Bucket=bucket)["Uploads"][0]["Initiated"].year < 2026
    storage = S3Storage(s3_settings)
    stored = tmp_path / "job_2.png"
    stored.write_bytes(b"\x89PNG")
    try:
        await storage.put_file("images/canvas-1/job_2.png", stored, "image/png")
        assert await sweep_abandoned_writes(storage, older_than_seconds=3600) == 1
        left = admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        assert [upload["Key"] for upload in left] == ["another-app/video.mp4"]
        assert await storage.keys_under("images/canvas-1/job") == ["images/canvas-1/job_2.png"]
        assert await sweep_abandoned_writes(storage, older_than_seconds=3600) == 0
    finally:
        await storage.aclose()
