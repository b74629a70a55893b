"""Starting workflows (jobs, canvas runs, outbound webhooks) and signalling jobs: what the API, the sweep and
benchmarks do with Temporal."""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.config import Settings
from core.temporal import CANVAS_ID, IMAGE_MODEL, NODE_ID, PROVIDER, TENANT
from core.tracing import continuing
from models.payloads import (
    CancelAtProvider,
    CanvasRunInput,
    GenerationResult,
    ImageJobInput,
    OutboundDeliveryInput,
    PollingPlan,
    ProviderEvent,
)
from models.schemas import ImagePromptSpec
from models.tables import Run
from models.tenancy import tenant_of
from models.vocabulary import PRIORITY_KEYS
from models.vocabulary import Priority as JobPriority

SUMMARY_PROMPT_CHARS = 60
# The job workflow and its signal, by the names workers register (`@workflow.defn` on ImageJobWorkflow). Starting
# by name keeps the workflow module, and all the activity code it references, out of the API process.
IMAGE_JOB_WORKFLOW = "ImageJobWorkflow"
PROVIDER_EVENT_SIGNAL = "provider_event"
RUNNING_SLOT_FREED_SIGNAL = "running_slot_freed"

log = logging.getLogger(__name__)


JOB_ID_LABEL = "job-id:"


def new_job_id(secret: str | None = None, idempotency_key: str | None = None, *, scope: str = "") -> str:
    """A fresh id, or the same id for the same Idempotency-Key from the same caller (so a repeat finds the
    first job).

    The keyed id is an HMAC under the server's `secret` of the caller's `scope` (their tenant) and the key:
    nobody can compute a job id, and with it an image URL, from a guessable Idempotency-Key, and two callers
    using the same key get two jobs: the id is derived from the tenant, so workflow ids of tenants never collide.
    """
    if secret and idempotency_key:
        message = f"{JOB_ID_LABEL}{len(scope)}:{scope}:{idempotency_key}".encode()
        return "job_" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()[:32]
    return "job_" + uuid.uuid4().hex


def polling_plan(settings: Settings, *, webhooks: bool = False) -> PollingPlan:
    """How an asynchronous job polls: backing off when the provider sends webhooks (polling is then a fallback;
    the spec: never poll continuously a provider that can call back), at a steady pace when it does not."""
    return PollingPlan(
        webhook_grace=settings.WEBHOOK_GRACE_SECONDS,
        interval=settings.POLL_INTERVAL_SECONDS,
        timeout=settings.POLL_TIMEOUT_SECONDS,
        backoff=webhooks,
    )


def job_summary(job: ImageJobInput) -> str:
    """What an operator sees in the Temporal Web UI's list: provider, model, node and the prompt's head."""
    prompt = " ".join(job.spec.prompt.split())
    if len(prompt) > SUMMARY_PROMPT_CHARS:
        prompt = prompt[: SUMMARY_PROMPT_CHARS - 1] + "…"
    return f"{job.provider}:{job.model} · node {job.node_id} · {prompt}"


async def start_job(client: Client, settings: Settings, job: ImageJobInput) -> WorkflowHandle[Any, GenerationResult]:
    """Start the job's workflow; starting the same job id again returns the existing one, running or ended."""
    try:
        return await _start(client, settings, job)
    except WorkflowAlreadyStartedError:
        # The job ran and ended already: REJECT_DUPLICATE keeps it from running twice, which is what a repeat wants.
        return client.get_workflow_handle(job.job_id, result_type=GenerationResult)


async def _start(client: Client, settings: Settings, job: ImageJobInput) -> WorkflowHandle[Any, GenerationResult]:
    with continuing(job.trace_parent):  # the start's span, and so the workflow's, join the request's trace
        return await _start_workflow(client, settings, job)


async def _start_workflow(
    client: Client, settings: Settings, job: ImageJobInput
) -> WorkflowHandle[Any, GenerationResult]:
    return await client.start_workflow(
        IMAGE_JOB_WORKFLOW,
        job,
        result_type=GenerationResult,
        id=job.job_id,
        task_queue=settings.TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        search_attributes=job_search_attributes(job),
        static_summary=job_summary(job),
        priority=task_priority(job.priority, job.canvas_id),
    )


def job_search_attributes(job: ImageJobInput) -> TypedSearchAttributes:
    """What operators filter a job by in the Temporal UI, whichever way it started (alone or in a canvas run)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(CANVAS_ID, job.canvas_id),
            SearchAttributePair(NODE_ID, job.node_id),
            SearchAttributePair(PROVIDER, job.provider),
            SearchAttributePair(IMAGE_MODEL, job.model),
            SearchAttributePair(TENANT, tenant_of(job.canvas_id)),
        ]
    )


def task_priority(priority: str, canvas_id: str) -> Priority:
    """Temporal's priority for a job or run on canvas `canvas_id`: its tasks leave a backlogged queue in priority
    order and, within a priority, shared fairly between tenants (the fairness key), so one tenant's burst does not
    starve another's job. Fairness needs the server's `matching.enableFairness`; without it the key is ignored
    and tasks of one priority go first in, first out. A tenant's weight, where it should differ, is set on the
    task queue (Temporal's fairness weight overrides), not here."""
    return Priority(priority_key=PRIORITY_KEYS[JobPriority(priority)], fairness_key=tenant_of(canvas_id))


def job_from_run(run: Run, *, asynchronous: bool, settings: Settings, webhooks: bool = False) -> ImageJobInput:
    """The workflow input of a recorded run, rebuilt from what the run stored (its request, in the API's names)."""
    spec = ImagePromptSpec.model_validate(run.request.get("promptSpec", {})).to_payload()
    return ImageJobInput(
        job_id=run.id,
        canvas_id=run.canvas_id,
        node_id=run.node_id,
        provider=run.provider,
        model=run.model,
        spec=spec,
        webhook_url=run.request.get("webhookUrl"),
        metadata=run.request.get("metadata") or {},
        polling=polling_plan(settings, webhooks=webhooks),
        asynchronous=asynchronous,
        priority=run.request.get("priority") or JobPriority.NORMAL,
        trace_parent=run.trace_parent,
    )


async def signal_provider_event(client: Client, job_id: str, event: ProviderEvent) -> None:
    """Hand a verified provider event to the job's workflow."""
    await client.get_workflow_handle(job_id).signal(PROVIDER_EVENT_SIGNAL, event)


async def wake_for_running_slot(client: Client, job_id: str) -> bool:
    """Tell a job waiting in its tenant's line that a running slot has freed; it then asks for the slot. False when
    the job has no workflow to wake (it was terminated from outside). A wake-up that does not arrive for another
    reason (Temporal is away) is not an error: the job asks again at its next recheck
    (workflows/policies.RUNNING_SLOT_RECHECK)."""
    try:
        await client.get_workflow_handle(job_id).signal(RUNNING_SLOT_FREED_SIGNAL)
    except Exception as error:  # the end that freed the slot is committed whatever happens here
        if isinstance(error, RPCError) and error.status == RPCStatusCode.NOT_FOUND:
            return False
        log.warning("could not wake job %s for its running slot (it will recheck): %r", job_id, error)
    return True


PROVIDER_CANCEL_WORKFLOW = "ProviderCancelWorkflow"


async def _start_once(
    client: Client, settings: Settings, workflow: str, argument: Any, *, id: str, **options: Any
) -> None:
    """Start one of our workflows on the main queue under `id`, or find it started: one running is left as it is,
    and one that ran and ended already is not run again (REJECT_DUPLICATE)."""
    try:
        await client.start_workflow(
            workflow,
            argument,
            id=id,
            task_queue=settings.TASK_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            **options,
        )
    except WorkflowAlreadyStartedError:
        pass


async def start_provider_cancel(client: Client, settings: Settings, request: CancelAtProvider, canvas_id: str) -> None:
    """Cancel the provider job of a job (on canvas `canvas_id`) whose own workflow is gone, in a workflow of its own
    (workflows/provider_cancel.py); asking again for the same job starts nothing more."""
    await _start_once(
        client,
        settings,
        PROVIDER_CANCEL_WORKFLOW,
        request,
        id=f"{request.job_id}-provider-cancel",
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(CANVAS_ID, canvas_id),
                SearchAttributePair(PROVIDER, request.provider),
                SearchAttributePair(TENANT, tenant_of(canvas_id)),
            ]
        ),
        static_summary=f"cancel {request.provider} job {request.provider_job_id} of {request.job_id}",
    )


CANVAS_RUN_WORKFLOW = "CanvasRunWorkflow"


async def start_canvas_run(client: Client, settings: Settings, plan: CanvasRunInput) -> None:
    """Start a board's run (workflow id = run id), or find it started; its nodes' jobs are its children."""
    with continuing(plan.trace_parent):
        await _start_once(
            client,
            settings,
            CANVAS_RUN_WORKFLOW,
            plan,
            id=plan.run_id,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(CANVAS_ID, plan.canvas_id), SearchAttributePair(TENANT, tenant_of(plan.canvas_id))]
            ),
            static_summary=f"canvas {plan.canvas_id} · {len(plan.nodes)} nodes",
            priority=task_priority(plan.priority, plan.canvas_id),
        )


OUTBOUND_WEBHOOK_WORKFLOW = "OutboundWebhookWorkflow"


async def start_delivery(client: Client, settings: Settings, delivery: OutboundDeliveryInput, *, id: str = "") -> None:
    """Start an outbound webhook's delivery (workflow id = the delivery's id, or `id` for a replay), or find it."""
    await _start_once(
        client,
        settings,
        OUTBOUND_WEBHOOK_WORKFLOW,
        delivery,
        id=id or delivery.delivery_id,
        static_summary=f"outbound webhook {delivery.delivery_id}",
    )
