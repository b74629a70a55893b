"""Files nothing points to: the sweep deletes what jobs that ended without a result left in storage.

A job stores its outputs (and their thumbnails) under `images/{canvas}/{job id}` as it goes. When it then fails
or is cancelled, its record carries no image, so nothing will ever point at those files: 88 cancelled jobs left
176 files behind. Once such a job has been over for ORPHAN_FILES_GRACE_SECONDS (an activity that outlived its
job's end has stopped writing by then), the workers' sweep deletes its files and marks the run swept. A failed
job whose record shows an image keeps it.

A worker killed in the middle of a write leaves what the write was building: a hidden `.part` file beside its
target, or an S3 multipart upload. Those are removed once untouched for the same grace, on a slower beat, since
finding them means walking the whole directory or listing the bucket's uploads.
"""

from __future__ import annotations

import logging

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.db import transaction
from core.storage import ObjectStorage, job_key_prefix

log = logging.getLogger(__name__)

SWEEP_BATCH = 100
ABANDONED_WRITES_EVERY_SECONDS = 600.0


def is_job_file(key: str, prefix: str) -> bool:
    """`key` is one of the job's own files (not another job's whose id merely starts with this one's)."""
    return key.startswith((f"{prefix}.", f"{prefix}-"))


async def ended_without_result(
    session: AsyncSession, *, older_than_seconds: float, limit: int
) -> list[tuple[str, str]]:
    """(job id, canvas id) of failed or cancelled jobs over `older_than_seconds` ago whose files are not swept."""
    found = await session.execute(
        text(
            "SELECT id, canvas_id FROM runs WHERE status IN ('failed', 'cancelled') AND files_swept_at IS NULL"
            " AND finished_at < now() - make_interval(secs => :seconds) AND NOT (payload ? 'imageUrl')"
            " ORDER BY finished_at LIMIT :limit"
        ),
        {"seconds": older_than_seconds, "limit": limit},
    )
    return [(str(job_id), str(canvas_id)) for job_id, canvas_id in found.all()]


async def sweep_files(
    sessions: async_sessionmaker[AsyncSession], storage: ObjectStorage, *, older_than_seconds: float
) -> int:
    """Delete the files of jobs that ended without a result; returns how many files went."""
    async with sessions() as session:
        ended = await ended_without_result(session, older_than_seconds=older_than_seconds, limit=SWEEP_BATCH)
    deleted = 0
    for job_id, canvas_id in ended:
        prefix = job_key_prefix(canvas_id, job_id)
        for key in await storage.keys_under(prefix):
            if is_job_file(key, prefix):
                await storage.delete(key)
                deleted += 1
        async with transaction(sessions) as session:
            await session.execute(text("UPDATE runs SET files_swept_at = now() WHERE id = :id"), {"id": job_id})
    if deleted:
        log.info("deleted %d files of %d jobs that ended without a result", deleted, len(ended))
    return deleted


async def sweep_abandoned_writes(storage: ObjectStorage, *, older_than_seconds: float) -> int:
    """Remove what killed writes left half done; returns how many went."""
    removed = await storage.remove_abandoned_writes(older_than_seconds)
    if removed:
        log.info("removed %d writes that killed processes left unfinished", removed)
    return removed
