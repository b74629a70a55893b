"""Jobs: start, read, list, cancel, retry."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Header, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.admission import admit_start, admit_within_budgets, budgets_for
from api.auth import Caller, CallerDep
from api.deps import AppState, JobIdPath, SessionDep, StateDep, TemporalDep, TraceParentDep
from api.errors import ApiError
from core import metrics
from core.db import transaction
from core.logs import bind
from handoff.ends import NOT_FOUND, end_job, why_workflow_gone
from handoff.starts import job_from_run, new_job_id, polling_plan
from handoff.sweep import start_confirmed
from models.errors import InvalidJobRequest, ModelRetired
from models.payloads import ImageJobInput, cancellation
from models.schemas import ErrorBody, ImageJobRecord, ImageJobStatus, JobPage, StartImageJobRequest
from models.tables import Run
from models.tenancy import workflow_id_of
from models.vocabulary import TERMINAL_STATUSES, JobStatus
from planning.canvas_plan import content_hash, input_key
from providers.catalog import Resolution
from store import canvas_runs, runs
from store.runs import UnfinishedRun

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody},
    401: {"model": ErrorBody},
    404: {"model": ErrorBody},
    409: {"model": ErrorBody},
    422: {"model": ErrorBody},
    403: {"model": ErrorBody, "description": "A canvas token for another canvas, or one that can only read."},
    429: {
        "model": ErrorBody,
        "description": "`rate_limited`: the tenant's startsPerMinute is used up (see Retry-After); "
        "`budget_exceeded`: the job's estimate passes the day's budget (BUDGET_USD_PER_DAY or the tenant's).",
    },
    503: {"model": ErrorBody},
}


# Fields the spec declares optional are absent when unset, never null (a strict client tests `!== undefined`).
SPEC_SHAPES: dict[str, Any] = {"response_model_exclude_none": True}


def job_from_request(
    state: StateDep, body: StartImageJobRequest, job_id: str, *, canvas: str
) -> tuple[ImageJobInput, dict[str, object]]:
    """Check the provider and model can do what is asked, before anything is stored or started; the job is on the
    canvas whose key is `canvas` (the caller's tenant's `body.workflowId`)."""
    provider = state.providers.get(body.provider)
    if provider is None:
        raise unknown_provider(state, body.provider)
    resolution = resolve_model(state, body.provider, body.model or provider.default_model)
    provider = state.providers[resolution.provider]  # an alias may name another provider
    reason = provider.disabled_reason()
    if reason:
        raise ApiError(400, "provider_disabled", f"Provider {provider.name!r} is disabled: {reason}.")
    limit = state.settings.MAX_PROMPT_CHARS
    if len(body.prompt_spec.prompt) > limit:
        message = f"basePrompt is {len(body.prompt_spec.prompt)} characters; the limit is {limit}"
        raise ApiError(422, "invalid_request", message, [{"field": "promptSpec.basePrompt", "message": message}])
    model, known = resolution.model, resolution.entry is not None
    if not known and not provider.accepts_model(model):
        usable = [*provider.models, *(entry.model for entry in state.models.discovered(provider.name))]
        message = f"Provider {provider.name!r} has no model {model!r}; models: {', '.join(usable)}."
        raise ApiError(422, "unsupported_model", message)
    job = body.to_job(job_id=job_id, model=model)
    job.canvas_id = canvas
    job.provider = provider.name
    try:
        effective = provider.check_request(model, job.spec, known=known)
    except InvalidJobRequest as error:
        details = [{"field": f"promptSpec.{error.field}", "message": error.message}] if error.field else None
        raise ApiError(422, "unsupported_request", error.message, details) from error
    job.asynchronous = provider.asynchronous
    job.polling = polling_plan(state.settings, webhooks=provider.supports_webhooks)
    job.estimated_cost_usd = resolution.estimate(effective, job.spec.n)
    job.warnings = list(resolution.warnings)
    job.aliased_from = resolution.aliased_from
    for warning in resolution.warnings:
        log.warning("job %s: %s", job_id, warning)
    return job, effective


def job_settings(body: StartImageJobRequest, job: ImageJobInput) -> dict[str, Any]:
    """What a job's image depends on besides its input image: provider, model (as resolved) and prompt settings."""
    return {"provider": job.provider, "model": job.model} | body.prompt_spec.model_dump(exclude={"previous_image"})


async def inputs_hash(state: StateDep, body: StartImageJobRequest, job: ImageJobInput) -> str:
    """The job's inputs' hash, as a canvas run computes it for a node (its cache key): its input image stands in
    by the hash of the canvas job that made it."""
    previous = body.prompt_spec.previous_image
    made_from: dict[str, str] = {}
    if previous:
        async with state.sessions() as session:
            made_from = await canvas_runs.image_hashes(session, canvas_id=job.canvas_id, image_urls=[previous])
    return content_hash(job_settings(body, job), input_key(previous, made_from))


def unknown_provider(state: StateDep, name: str) -> ApiError:
    available = ", ".join(sorted(state.providers))
    return ApiError(400, "unknown_provider", f"Unknown provider {name!r}; available: {available}.")


def resolve_model(state: StateDep, provider: str, model: str) -> Resolution:
    """The model the job will call (MODEL_ALIASES applied); a retired one is refused here, before any call."""
    try:
        resolution = state.models.resolve(provider, model)
    except ModelRetired as error:
        raise ApiError(422, "model_retired", f"{error.message}.") from error
    if resolution.provider not in state.providers:
        raise unknown_provider(state, resolution.provider)
    return resolution


def same_request(run: Run, job: ImageJobInput) -> bool:
    return (
        run.canvas_id == job.canvas_id
        and run.node_id == job.node_id
        and (run.provider, run.model) == (job.provider, job.model)
        and run.request == runs.run_request_json(job)
    )


async def get_run_or_404(session: AsyncSession, job_id: str, caller: Caller) -> Run:
    """The job, when the caller may see it: another tenant's job, or one on another canvas than the caller's
    canvas token, answers 404 as a job that does not exist."""
    run = await runs.get_run(session, job_id=job_id)
    if run is None or not caller.sees(run.canvas_id):
        raise ApiError(404, "job_not_found", f"No job {job_id!r}.")
    return run


async def launch(
    state: StateDep,
    caller: Caller,
    job: ImageJobInput,
    effective: dict[str, object],
    response: Response,
    after: BackgroundTasks,
) -> Run:
    """Record the run and answer; its workflow is started right after (handoff/sweep.py). A repeat of the same
    request answers the same job.

    Every crash point converges. The run, its event and the node claim are one statement, so either all exist or
    none. Once committed, the run gets its workflow: from this process at once, or from the workers' sweep if
    this process dies first or Temporal is down. A repeat of a run still pending hands its start off again (a
    start finds a workflow already there), so a start lost to a crash happens then at the latest.
    """
    bind(jobId=job.job_id, workflowId=job.canvas_id, nodeId=job.node_id, provider=job.provider, model=job.model)
    budgets = budgets_for(state, caller)
    if budgets and job.estimated_cost_usd:
        # A priced job under a budget: admitted and recorded under the budget's lock (a repeat is not charged).
        async with transaction(state.sessions) as session:
            if await runs.get_run(session, job_id=job.job_id) is None:
                await admit_within_budgets(session, budgets, job.estimated_cost_usd)
            recorded = await runs.record_run(session, job=job, effective=effective)
    else:
        # One statement, atomic by itself: no transaction round trips around it.
        async with state.autocommit_sessions() as session:
            recorded = await runs.record_run(session, job=job, effective=effective)
    run = recorded.run
    if not recorded.created:
        if not same_request(run, job):
            raise ApiError(409, "idempotency_key_reused", "This Idempotency-Key was used for a different request.")
        response.headers["Idempotent-Replayed"] = "true"
    if recorded.created:
        metrics.job_started(job.provider, job.model)
    if recorded.created or run.workflow_started_at is None:
        after.add_task(state.handoff.start, job, supersedes=recorded.older_job_ids if recorded.created else None)
    return run


@router.post("", status_code=202, response_model=ImageJobRecord, responses=ERRORS, **SPEC_SHAPES)
async def start_image_job(
    body: StartImageJobRequest,
    state: StateDep,
    response: Response,
    after: BackgroundTasks,
    caller: CallerDep,
    trace_parent: TraceParentDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> ImageJobRecord:
    """Start an image job for a canvas node; answers at once with the pending job.

    With an `Idempotency-Key`, a repeat of the same request answers the same job (`Idempotent-Replayed: true`)
    and a different request under the same key answers 409. Keys are the tenant's own: two tenants using the
    same key make two jobs.
    """
    canvas = caller.key_of(body.workflow_id)
    job_id = new_job_id(state.settings.WEBHOOK_SECRET, idempotency_key, scope=caller.tenant_id)
    job, effective = job_from_request(state, body, job_id, canvas=canvas)
    job.trace_parent = trace_parent
    job.content_hash = await inputs_hash(state, body, job)
    if idempotency_key is None or await is_new_job(state, job_id):
        await admit_start(state, caller)  # a repeat of a start already made takes no second start
    return ImageJobRecord.readable(await launch(state, caller, job, effective, response, after))


async def is_new_job(state: AppState, job_id: str) -> bool:
    async with state.autocommit_sessions() as session:
        return await runs.get_run(session, job_id=job_id) is None


@router.get("", response_model=JobPage, responses=ERRORS, **SPEC_SHAPES)
async def list_jobs(
    session: SessionDep,
    caller: CallerDep,
    status: JobStatus | None = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    canvas_id: Annotated[str | None, Query(alias="workflowId", max_length=256)] = None,
    node_id: Annotated[str | None, Query(alias="nodeId", max_length=256)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text the prompt contains (any case).")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobPage:
    """List the tenant's jobs (a canvas token's: its canvas'), newest first, filtered by status, provider, canvas,
    node or text in the prompt (`q`)."""
    canvas = caller.key_of(canvas_id) if canvas_id is not None else caller.canvas
    try:
        items, next_cursor = await runs.list_runs(
            session,
            tenant_id=caller.tenant_id,
            status=status,
            provider=provider,
            canvas_id=canvas,
            node_id=node_id,
            text_in_prompt=q,
            cursor=cursor,
            limit=limit,
        )
    except ValueError as error:
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API returned.") from error
    return JobPage(items=[ImageJobRecord.readable(run) for run in items], next_cursor=next_cursor)


@router.get("/{jobId}", response_model=ImageJobRecord, responses=ERRORS, **SPEC_SHAPES)
async def get_job(job_id: JobIdPath, session: SessionDep, caller: CallerDep) -> ImageJobRecord:
    """Read one job."""
    return ImageJobRecord.readable(await get_run_or_404(session, job_id, caller))


@router.get("/{jobId}/status", response_model=ImageJobStatus, responses=ERRORS, **SPEC_SHAPES)
async def get_job_status(job_id: JobIdPath, session: SessionDep, caller: CallerDep) -> ImageJobStatus:
    """The spec's ImageJobStatus (`job_id`, `status`, `progress`, `images[].url`, `error`), for polling clients."""
    return ImageJobStatus.from_record(ImageJobRecord.readable(await get_run_or_404(session, job_id, caller)))


@router.post("/{jobId}/cancel", status_code=202, response_model=ImageJobRecord, responses=ERRORS, **SPEC_SHAPES)
async def cancel_job(
    job_id: JobIdPath, state: StateDep, session: SessionDep, caller: CallerDep, temporal: TemporalDep
) -> ImageJobRecord:
    """Cancel a pending or running job (the provider's job too, where it can be cancelled)."""
    run = await get_run_or_404(session, job_id, caller)
    if run.status in TERMINAL_STATUSES:
        raise ApiError(409, "job_finished", f"Job {job_id!r} already ended ({run.status}); nothing to cancel.")
    try:
        await cancel_workflow(state, temporal, run)
        gone = await why_workflow_gone(temporal, run.id)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise ApiError(503, "temporal_unavailable", f"Could not cancel the job: {error.message}") from error
        gone = NOT_FOUND
    if gone is not None:
        # The workflow had closed without ending the job (terminated from outside: Temporal takes the cancel of a
        # closed workflow and does nothing), so nothing else will end it: the cancel does, as the workflow's
        # own cancellation would have. A workflow that ended the job itself meanwhile leaves nothing to do.
        unfinished = UnfinishedRun(run.id, run.canvas_id, run.node_id)
        await session.rollback()  # one connection per request at a time: the end takes its own
        try:
            await end_job(temporal, state.settings, state.sessions, unfinished, cancellation(unfinished.job_id))
        except RPCError as error:  # its provider job's cancel could not start: the job is left as it was
            raise ApiError(503, "temporal_unavailable", f"Could not cancel the job: {error.message}") from error
        await session.refresh(run)
    return ImageJobRecord.readable(run)


async def cancel_workflow(state: AppState, temporal: Client, run: Run) -> None:
    """Cancel the run's workflow; a run committed and not started yet is started first, so that the workflow's
    own cancellation finishes its run and its node as for any other job."""
    handle = temporal.get_workflow_handle(run.id)
    try:
        await handle.cancel()
    except RPCError as error:
        provider = state.providers.get(run.provider)
        if error.status != RPCStatusCode.NOT_FOUND or run.workflow_started_at is not None or provider is None:
            raise
        job = job_from_run(
            run, asynchronous=provider.asynchronous, settings=state.settings, webhooks=provider.supports_webhooks
        )
        await start_confirmed(temporal, state.settings, state.autocommit_sessions, job)
        await handle.cancel()


@router.post("/{jobId}/retry", status_code=202, response_model=ImageJobRecord, responses=ERRORS, **SPEC_SHAPES)
async def retry_job(
    job_id: JobIdPath,
    state: StateDep,
    session: SessionDep,
    response: Response,
    after: BackgroundTasks,
    caller: CallerDep,
    trace_parent: TraceParentDep,
) -> ImageJobRecord:
    """Start a new job with the same request as a failed or cancelled one."""
    run = await get_run_or_404(session, job_id, caller)
    if run.status not in ("failed", "cancelled"):
        raise ApiError(
            409, "job_not_retryable", f"Only failed or cancelled jobs can be retried; this one is {run.status}."
        )
    body = StartImageJobRequest.model_validate(
        {
            "workflowId": workflow_id_of(run.canvas_id),
            "nodeId": run.node_id,
            "provider": run.provider,
            "model": run.model,
            "promptSpec": run.request.get("promptSpec", {}),
            "webhookUrl": run.request.get("webhookUrl"),
            "metadata": {**run.request.get("metadata", {}), "retryOf": run.id},
        }
    )
    job, effective = job_from_request(state, body, new_job_id(), canvas=run.canvas_id)
    job.trace_parent = trace_parent
    await session.rollback()  # one connection per request at a time: `inputs_hash` and `launch` take their own
    job.content_hash = await inputs_hash(state, body, job)
    await admit_start(state, caller)
    return ImageJobRecord.readable(await launch(state, caller, job, effective, response, after))
