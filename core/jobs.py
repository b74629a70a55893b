"""Starting and cancelling job workflows: what the API (and benchmarks) do with Temporal."""

from __future__ import annotations

import hashlib
import uuid

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)

from core.config import Settings
from core.temporal import CANVAS_ID, IMAGE_MODEL, NODE_ID, PROVIDER
from models.payloads import GenerationResult, ImageJobInput, PollingPlan
from workflows.image_job import ImageJobWorkflow

SUMMARY_PROMPT_CHARS = 60


def new_job_id(idempotency_key: str | None = None) -> str:
    """A fresh id, or the same id for the same Idempotency-Key (so a repeat finds the first job)."""
    if idempotency_key:
        return "job_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    return "job_" + uuid.uuid4().hex


def polling_plan(settings: Settings) -> PollingPlan:
    return PollingPlan(
        webhook_grace=settings.WEBHOOK_GRACE_SECONDS,
        interval=settings.POLL_INTERVAL_SECONDS,
        timeout=settings.POLL_TIMEOUT_SECONDS,
    )


def job_summary(job: ImageJobInput) -> str:
    """What an operator sees in the Temporal Web UI's list: provider, model, node and the prompt's head."""
    prompt = " ".join(job.spec.prompt.split())
    if len(prompt) > SUMMARY_PROMPT_CHARS:
        prompt = prompt[: SUMMARY_PROMPT_CHARS - 1] + "…"
    return f"{job.provider}:{job.model} · node {job.node_id} · {prompt}"


async def start_job(
    client: Client, settings: Settings, job: ImageJobInput
) -> WorkflowHandle[ImageJobWorkflow, GenerationResult]:
    """Start the job's workflow; starting the same job id again returns the existing one."""
    return await client.start_workflow(
        ImageJobWorkflow.run,
        job,
        id=job.job_id,
        task_queue=settings.TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(CANVAS_ID, job.canvas_id),
                SearchAttributePair(NODE_ID, job.node_id),
                SearchAttributePair(PROVIDER, job.provider),
                SearchAttributePair(IMAGE_MODEL, job.model),
            ]
        ),
        static_summary=job_summary(job),
    )
