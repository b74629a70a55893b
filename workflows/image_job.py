"""ImageJobWorkflow: one image job, from the run record to the canvas node.

    create_run -> mark_running [-> wait in line, mark_running ...] -> provider step -> update_node -> complete_run

A job whose tenant runs its maxConcurrentJobs already stays `pending` in its tenant's line: the end of one of the
tenant's jobs wakes the oldest in line (`running_slot_freed`), which then asks for the slot again.

The provider step is one activity for synchronous providers (call + stream to storage). For asynchronous
ones it is submit, then wait for a terminal `provider_event` signal (the verified webhook) or poll when
none comes within the grace period, then store the result URLs. Whichever arrives first wins; repeats
and events after the terminal one change nothing. Failures and cancellation still finish the run and the
node, so the canvas never shows a job that is neither done nor failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.generation import GenerationActivities
    from activities.runs import RunActivities
    from models.errors import PROVIDER_TIMEOUT
    from models.payloads import (
        CancelAtProvider,
        GenerationResult,
        ImageJobInput,
        JobSnapshot,
        NodeUpdate,
        PollingPlan,
        PollRequest,
        ProgressUpdate,
        ProviderCall,
        ProviderEvent,
        ProviderJobAttached,
        RunTransition,
        StoreOutputsRequest,
        cancellation,
    )
    from models.vocabulary import JobStatus
    from workflows.policies import (
        CLEANUP_STEP,
        DB_LOCAL_STEP,
        DB_STEP,
        PROVIDER_CALL,
        PROVIDER_POLL,
        RUNNING_SLOT_RECHECK,
        RUNNING_SLOT_RECHECK_LONGEST,
        RUNNING_SLOT_RECHECK_SPREAD,
        RUNNING_SLOT_WAIT,
    )

StepInput = TypeVar("StepInput")
StepResult = TypeVar("StepResult")

# Jobs started before database steps became local activities replay them as regular ones (see `_db_step`).
DB_STEPS_AS_LOCAL_ACTIVITIES = "db-steps-as-local-activities"
PROGRESS_ONLY_FORWARD = "progress-only-forward"
POLL_BACKOFF = "poll-backoff"
TENANT_RUNNING_SLOTS = "tenant-running-slots"
RUNNING_SLOT_WAKEUPS = "running-slot-wakeups"
GRACE_AFTER_LAST_WEBHOOK = "grace-after-last-webhook"


def provider_task_queue(base_queue: str, provider: str) -> str:
    """Provider activities run on their own queue so Temporal can rate-limit each provider."""
    return f"{base_queue}.{provider}"


def failure_of(error: BaseException) -> tuple[str, str]:
    """(type, message) of the innermost application failure, for the run, the node and the operator."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause.type or "Failed", cause.message
        if isinstance(cause, FailureError) and cause.cause is None:
            return type(cause).__name__, cause.message
        cause = cause.__cause__
    return "Failed", str(error)


@workflow.defn
class ImageJobWorkflow:
    """A durable image job; the workflow id is the job id."""

    def __init__(self) -> None:
        self._state = JobSnapshot(phase=JobStatus.PENDING)
        self._progress_events: list[ProviderEvent] = []
        self._terminal_event: ProviderEvent | None = None
        self._seen_deliveries: set[str] = set()
        self._unattached_events: list[ProviderEvent] = []
        self._strays: list[str] = []
        self._strays_cancelled = 0
        self._last_webhook_at: datetime | None = None
        self._slot_freed = False

    @workflow.query
    def status(self) -> JobSnapshot:
        return self._state

    @workflow.signal
    def provider_event(self, event: ProviderEvent) -> None:
        """A verified webhook. Duplicates and anything after the end are ignored."""
        if self._take_event(event):
            self._last_webhook_at = workflow.now()

    @workflow.signal
    def running_slot_freed(self) -> None:
        """One of the tenant's jobs ended while this one waits in line for a running slot."""
        self._slot_freed = True

    def _take_event(self, event: ProviderEvent) -> bool:
        """Take a webhook's or a poll's event; False when it is not this job's to take (yet)."""
        if self._state.provider_job_id is None:
            # Until the submit answers, our job's events cannot be told from a stray's; they are taken after it.
            self._unattached_events.append(event)
            return False
        if self._terminal_event is not None:
            return False
        reported = event.provenance.provider_job_id
        if reported and reported != self._state.provider_job_id:
            # A submit whose answer was lost and retried leaves a second job at the provider, reporting to the
            # first attempt's webhook URL: it is cancelled (unless recorded as another job's), and its events
            # are not ours. The webhook route has already refused provider jobs other jobs own.
            if reported not in self._strays:
                self._strays.append(reported)
            return False
        if event.delivery_id:
            if event.delivery_id in self._seen_deliveries:
                return False
            self._seen_deliveries.add(event.delivery_id)
        if event.terminal:
            self._terminal_event = event
        else:
            self._progress_events.append(event)
        return True

    @workflow.run
    async def run(self, job: ImageJobInput) -> GenerationResult:
        started = workflow.now()
        timings: dict[str, float] = {}
        try:
            await self._db_step(RunActivities.create_run, job)
            running = await self._db_step(RunActivities.mark_running, job)
            # Histories from before tenant caps recorded no answer (None): those jobs run at once, as they did.
            if running is False:
                await self._wait_for_running_slot(job)
            self._state.phase = JobStatus.RUNNING
            timings["queued"] = _seconds_since(started)
            mark = workflow.now()
            result = await self._provider_step(job)
            timings["generation"] = max(0.0, _seconds_since(mark) - result.storing_seconds)
            timings["storing"] = result.storing_seconds
            mark = workflow.now()
            await self._update_node(job, JobStatus.COMPLETED, result=result)
            timings["nodeUpdate"] = _seconds_since(mark)
            timings["total"] = _seconds_since(started)
            await self._db_step(
                RunActivities.complete_run,
                RunTransition(job_id=job.job_id, status=JobStatus.COMPLETED, result=result, timings=timings),
            )
            self._state.phase = JobStatus.COMPLETED
            self._state.progress = 100.0
            return result
        except (asyncio.CancelledError, CancelledError):
            await self._finish_cancelled(job)
            raise
        except (ActivityError, ApplicationError) as error:
            if _caused_by_cancellation(error):
                await self._finish_cancelled(job)
                raise
            error_type, message = failure_of(error)
            await self._finish_failed(job, error_type, message)
            raise ApplicationError(message, type=error_type, non_retryable=True) from error

    async def _wait_for_running_slot(self, job: ImageJobInput) -> None:
        """Wait in the tenant's line; jobs from before the line keep the activity that asks until a slot frees."""
        if workflow.patched(RUNNING_SLOT_WAKEUPS):
            await self._wait_in_line(job)
        elif workflow.patched(TENANT_RUNNING_SLOTS):
            await workflow.execute_activity_method(RunActivities.wait_for_running_slot, job, **RUNNING_SLOT_WAIT)

    async def _wait_in_line(self, job: ImageJobInput) -> None:
        """Ask again when woken, or at each (sparser) recheck, until a slot is ours. A wake-up that comes while the
        job asks is kept for the next wait, so none is lost."""
        recheck = RUNNING_SLOT_RECHECK
        while True:
            spread = 1 + RUNNING_SLOT_RECHECK_SPREAD * (2 * workflow.random().random() - 1)
            try:
                await workflow.wait_condition(
                    lambda: self._slot_freed, timeout=recheck * spread, timeout_summary="recheck for a running slot"
                )
            except TimeoutError:
                recheck = min(recheck * 2, RUNNING_SLOT_RECHECK_LONGEST)
            self._slot_freed = False
            if await self._db_step(RunActivities.mark_running, job):
                return

    async def _provider_step(self, job: ImageJobInput) -> GenerationResult:
        call = ProviderCall(
            job_id=job.job_id,
            canvas_id=job.canvas_id,
            node_id=job.node_id,
            provider=job.provider,
            model=job.model,
            spec=job.spec,
            webhook_url=job.webhook_url,
        )
        queue = provider_task_queue(workflow.info().task_queue, job.provider)
        if job.asynchronous:
            return await self._asynchronous_step(job, call, queue)
        return await workflow.execute_activity_method(
            GenerationActivities.generate_image, call, task_queue=queue, **PROVIDER_CALL
        )

    async def _asynchronous_step(self, job: ImageJobInput, call: ProviderCall, queue: str) -> GenerationResult:
        submitted = await workflow.execute_activity_method(
            GenerationActivities.submit_job, call, task_queue=queue, **PROVIDER_CALL
        )
        self._state.provider_job_id = submitted.provider_job_id
        for early in self._unattached_events:
            self.provider_event(early)
        self._unattached_events.clear()
        await self._db_step(
            RunActivities.attach_provider_job,
            ProviderJobAttached(job.job_id, submitted.provider_job_id, submitted.effective),
        )
        outcome = await self._await_outcome(job, submitted.provider_job_id, queue)
        if outcome.status != "succeeded":
            raise ApplicationError(
                outcome.error or f"{job.provider} reported the job {outcome.status}",
                type=outcome.error_type or "ProviderJobFailed",
                non_retryable=True,
            )
        return await workflow.execute_activity_method(
            GenerationActivities.store_outputs,
            StoreOutputsRequest(
                job_id=job.job_id,
                canvas_id=job.canvas_id,
                node_id=job.node_id,
                provider=job.provider,
                urls=outcome.output_urls,
                # The provider's report keeps what we asked it for (e.g. the nearest allowed size) beside its own.
                provenance=replace(
                    outcome.provenance, effective={**submitted.effective, **outcome.provenance.effective}
                ),
            ),
            task_queue=queue,
            **PROVIDER_CALL,
        )

    async def _await_outcome(self, job: ImageJobInput, provider_job_id: str, queue: str) -> ProviderEvent:
        """Wait for a terminal webhook; poll at the plan's cadence once `webhook_grace` has passed without one."""
        plan = job.polling
        now = workflow.now()
        deadline = now + timedelta(seconds=plan.timeout)
        next_poll = now + timedelta(seconds=plan.webhook_grace)
        polls = 0
        while True:
            await self._record_progress_events(job)
            await self._cancel_strays(job, queue)
            if self._terminal_event is not None:
                return self._terminal_event
            now = workflow.now()
            # Webhooks that keep coming show the provider reaches us: polling waits for `webhook_grace` of silence.
            if self._last_webhook_at is not None and workflow.patched(GRACE_AFTER_LAST_WEBHOOK):
                next_poll = max(next_poll, self._last_webhook_at + timedelta(seconds=plan.webhook_grace))
            if now >= deadline:
                raise ApplicationError(
                    f"{job.provider} did not finish within {plan.timeout:.0f}s",
                    type=PROVIDER_TIMEOUT,
                    non_retryable=True,
                )
            if now >= next_poll:
                polled = await workflow.execute_activity_method(
                    GenerationActivities.poll_job,
                    PollRequest(job.provider, provider_job_id),
                    task_queue=queue,
                    **PROVIDER_POLL,
                )
                self._take_event(polled)
                polls += 1
                next_poll = workflow.now() + timedelta(seconds=self._poll_interval(plan, polls))
                continue
            wake_at = min(next_poll, deadline)
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._terminal_event is not None
                        or bool(self._progress_events)
                        or self._strays_cancelled < len(self._strays)
                    ),
                    timeout=(wake_at - now).total_seconds(),
                )
            except TimeoutError:
                pass

    @staticmethod
    def _poll_interval(plan: PollingPlan, polls: int) -> float:
        # Jobs started before the backoff have no `backoff` in their plan (False): they keep their steady pace.
        if plan.backoff and workflow.patched(POLL_BACKOFF):
            return plan.next_interval(polls)
        return plan.interval

    async def _cancel_strays(self, job: ImageJobInput, queue: str) -> None:
        while self._strays_cancelled < len(self._strays):
            stray = self._strays[self._strays_cancelled]
            self._strays_cancelled += 1
            workflow.logger.warning("cancelling %s job %s: a second submit of job %s", job.provider, stray, job.job_id)
            await self._cancel_at_provider(job, stray, queue)

    async def _cancel_at_provider(self, job: ImageJobInput, provider_job_id: str, queue: str) -> None:
        try:
            await workflow.execute_activity_method(
                GenerationActivities.cancel_at_provider,
                CancelAtProvider(job.provider, provider_job_id, job.job_id),
                task_queue=queue,
                **CLEANUP_STEP,
            )
        except ActivityError:
            workflow.logger.warning("could not cancel %s job %s at the provider", job.provider, provider_job_id)

    async def _record_progress_events(self, job: ImageJobInput) -> None:
        while self._progress_events and self._terminal_event is None:
            event = self._progress_events.pop(0)
            if event.progress is None or event.progress == self._state.progress:
                continue
            # Progress only goes forward: a late or replayed delivery (the generic HMAC has no timestamp) moves
            # nothing back. Older histories recorded such steps back, hence the patch.
            if _moves_back(event.progress, self._state.progress) and workflow.patched(PROGRESS_ONLY_FORWARD):
                continue
            self._state.progress = event.progress
            await self._db_step(
                RunActivities.record_progress,
                ProgressUpdate(
                    job_id=job.job_id,
                    canvas_id=job.canvas_id,
                    node_id=job.node_id,
                    progress=event.progress,
                    dedupe_key=f"progress:{event.progress:.4f}",
                ),
            )

    async def _update_node(
        self, job: ImageJobInput, status: JobStatus, *, result: GenerationResult | None = None, error: str | None = None
    ) -> None:
        images = result.images if result else []
        update = NodeUpdate(
            canvas_id=job.canvas_id,
            node_id=job.node_id,
            job_id=job.job_id,
            status=status,
            image_url=images[0].url if images else None,
            image_urls=[image.url for image in images] if images else None,
            thumbnail_url=images[0].thumbnail_url if images else None,
            error=error,
            progress=100.0 if status == "completed" else None,
            cost_usd=result.provenance.cost_usd if result else None,
        )
        await self._db_step(RunActivities.update_node, update)

    async def _db_step(
        self, step: Callable[[RunActivities, StepInput], Awaitable[StepResult]], argument: StepInput
    ) -> StepResult:
        """A database step: short and idempotent, so a local activity; jobs from before that change keep the
        regular activities their histories recorded."""
        if workflow.patched(DB_STEPS_AS_LOCAL_ACTIVITIES):
            return await workflow.execute_local_activity_method(step, argument, **DB_LOCAL_STEP)
        return await workflow.execute_activity_method(step, argument, **DB_STEP)

    async def _finish_failed(self, job: ImageJobInput, error_type: str, message: str) -> None:
        self._state.phase = JobStatus.FAILED
        self._state.error = message
        # Node first, as on success: once the run reads terminal, so does the node.
        await self._update_node(job, JobStatus.FAILED, error=message)
        await self._db_step(
            RunActivities.fail_run,
            RunTransition(job_id=job.job_id, status=JobStatus.FAILED, error=message, error_code=error_type),
        )

    async def _finish_cancelled(self, job: ImageJobInput) -> None:
        """Cleanup after a cancellation: the provider's job, the run, the node."""
        self._state.phase = JobStatus.CANCELLED
        if self._state.provider_job_id:
            queue = provider_task_queue(workflow.info().task_queue, job.provider)
            await self._cancel_at_provider(job, self._state.provider_job_id, queue)
        await self._update_node(job, JobStatus.CANCELLED)
        await self._db_step(
            RunActivities.cancel_run,
            cancellation(job.job_id),
        )


def _moves_back(progress: float, current: float | None) -> bool:
    return current is not None and progress < current


def _caused_by_cancellation(error: BaseException) -> bool:
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, CancelledError):
            return True
        cause = cause.__cause__
    return False


def _seconds_since(moment: datetime) -> float:
    return round((workflow.now() - moment).total_seconds(), 3)
