"""Activities that talk to providers. They run on `image-jobs.<provider>` task queues, whose
`max_task_queue_activities_per_second` is that provider's rate limit across all workers. That limit lets a burst
through, so each request that counts against the limit first waits its turn in store/pacing.py, which spaces
the provider's requests evenly across all workers.

Image bytes stay inside these activities: they stream from the provider (or its result URL) into object
storage, and only keys and URLs are returned to the workflow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
from opentelemetry.trace import Span, SpanKind
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.runs import save_progress
from core.config import Settings
from core.db import transaction
from core.ingest import ImageIngest
from core.metrics import PROVIDER_ERRORS
from core.storage import ObjectStorage, job_key_prefix
from core.tracing import tracer
from models.errors import INVALID_REQUEST, RATE_LIMITED, InvalidJobRequest, ProviderError, error_class
from models.payloads import (
    CancelAtProvider,
    GenerationResult,
    NodeUpdate,
    PollRequest,
    ProgressUpdate,
    ProviderCall,
    ProviderEvent,
    StoredImage,
    StoreOutputsRequest,
    SubmitResult,
)
from models.vocabulary import JobStatus
from providers.base import ImageProvider
from providers.webhooks import job_webhook_url
from store import canvas_nodes, deliveries, runs
from store.pacing import ProviderPacer

# How often an activity that waits on a provider tells Temporal it is alive; the provider calls' heartbeat
# timeout (workflows/policies.py) is a few of these.
HEARTBEAT_EVERY = timedelta(seconds=2)


def provider_span(operation: str, provider: str) -> AbstractContextManager[Span]:
    """A span around one call to a provider, in the trace of its activity (a no-op when tracing is off)."""
    attributes = {"imagejobs.provider": provider, "imagejobs.job_id": activity.info().workflow_id or ""}
    return tracer.start_as_current_span(f"{operation} {provider}", kind=SpanKind.CLIENT, attributes=attributes)


def as_application_error(error: ProviderError) -> ApplicationError:
    """The one translation from a provider failure to what Temporal's retry policy understands."""
    retry_after = getattr(error, "retry_after", None)
    return ApplicationError(
        error.message, type=error.type, non_retryable=not error.retryable, next_retry_delay=retry_after
    )


RetryNote = Callable[[str, int], Awaitable[None]]


@asynccontextmanager
async def provider_errors(
    provider: str,
    on_rate_limited: Callable[[], Awaitable[None]] | None = None,
    on_retry: RetryNote | None = None,
) -> AsyncIterator[None]:
    """Provider failures as Temporal errors, each attempt's counted by class (imagejobs_provider_errors_total);
    `on_rate_limited` records a 429 on the job (GET /v1/stats), and `on_retry` says that a failed attempt will be
    tried again ("Attempt 1 of 3 failed: ...")."""
    try:
        yield
    except ProviderError as error:
        kind = error_class(error)
        PROVIDER_ERRORS.labels(provider=provider, **{"class": kind}).inc()
        if kind == RATE_LIMITED and on_rate_limited is not None:
            await on_rate_limited()
        attempt, attempts = activity.info().attempt, _maximum_attempts()
        if error.retryable and on_retry is not None and (attempts == 0 or attempt < attempts):
            of = f" of {attempts}" if attempts else ""
            await on_retry(f"Attempt {attempt}{of} failed: {error.message.rstrip('.')}; trying again.", attempt)
        raise as_application_error(error) from error
    except InvalidJobRequest as error:
        raise ApplicationError(error.message, type=INVALID_REQUEST, non_retryable=True) from error


def _maximum_attempts() -> int:
    """The activity's attempts in all (0: unlimited), from its retry policy."""
    policy = activity.info().retry_policy
    return policy.maximum_attempts if policy is not None else 0


@asynccontextmanager
async def heartbeating(heartbeat: Callable[[], None] = activity.heartbeat) -> AsyncIterator[None]:
    """Heartbeat while a provider call runs, so a dead worker is noticed within the heartbeat timeout
    and a cancellation reaches the call."""

    async def beat() -> None:
        while True:
            heartbeat()
            await asyncio.sleep(HEARTBEAT_EVERY.total_seconds())

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


# A canvas gains nothing from more than two progress updates a second, and each one is a database write.
PROGRESS_EVERY_SECONDS = 0.5


class ProgressGate:
    """Admits a progress point at most once per interval; the first one always."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last_admitted: float | None = None

    def admit(self) -> bool:
        now = time.monotonic()
        if self._last_admitted is not None and now - self._last_admitted < self._interval:
            return False
        self._last_admitted = now
        return True


def webhook_url_for(settings: Settings, call: ProviderCall, attempt: int) -> str:
    """Where the provider calls back for this submit attempt: under the job's own base URL or APP_URL, with the
    attempt's token. Made here, inside the activity, so no token ever enters workflow history."""
    base = call.webhook_url or settings.app_url
    return job_webhook_url(settings.WEBHOOK_SECRET, base, call.provider, call.job_id, attempt)


class ResumableSink:
    """The OutputSink of one `generate_image` attempt: ImageIngest, plus the provider job id an adapter remembers.

    Temporal hands an activity's last heartbeat details to its next attempt, so the id rides on every heartbeat of
    this attempt: after a worker crash or a retryable failure the next attempt finds it (`remembered`) and resumes
    that provider job instead of submitting, and paying for, another. A heartbeat without details would clear them,
    so the attempt heartbeats only through `heartbeat` (ingest progress does not heartbeat).
    """

    def __init__(self, previous_details: Sequence[Any], ingest: ImageIngest) -> None:
        earlier = previous_details[0] if previous_details else None
        self._provider_job_id = earlier if isinstance(earlier, str) else None
        self._ingest = ingest

    @property
    def stored(self) -> list[StoredImage]:
        return self._ingest.stored

    def heartbeat(self) -> None:
        activity.heartbeat(*([self._provider_job_id] if self._provider_job_id else []))

    def remember(self, provider_job_id: str) -> None:
        self._provider_job_id = provider_job_id
        self.heartbeat()

    def remembered(self) -> str | None:
        return self._provider_job_id

    async def store_stream(self, chunks: AsyncIterable[bytes]) -> StoredImage:
        return await self._ingest.store_stream(chunks)

    async def store_bytes(self, data: bytes) -> StoredImage:
        return await self._ingest.store_bytes(data)

    async def store_url(self, url: str) -> StoredImage:
        return await self._ingest.store_url(url)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        await self._ingest.progress(fraction, message)


class GenerationActivities:
    """Provider calls and result storage; gets providers, storage, HTTP client and sessions injected."""

    def __init__(
        self,
        *,
        providers: Mapping[str, ImageProvider],
        storage: ObjectStorage,
        http: httpx.AsyncClient,
        sessions: async_sessionmaker[AsyncSession],
        settings: Settings,
        pacer: ProviderPacer,
    ) -> None:
        self.providers = providers
        self.storage = storage
        self.http = http
        self.sessions = sessions
        self.settings = settings
        self.pacer = pacer

    async def _wait_turn(self, provider_name: str) -> None:
        """Wait for this request's turn in the provider's pacing, when the provider has a rate limit."""
        rate = self.providers[provider_name].rate_limit_per_minute()
        if rate:
            await self.pacer.wait_turn(provider_name, rate)

    def _rate_limited(self, job_id: str) -> Callable[[], Awaitable[None]]:
        """What records a 429 on the job; a database hiccup here must not replace the provider's error."""

        async def record() -> None:
            try:
                async with transaction(self.sessions) as session:
                    await runs.count_rate_limited(session, job_id=job_id)
            except SQLAlchemyError as error:
                activity.logger.warning("could not count a 429 on job %s: %s", job_id, error)

        return record

    def _retrying(self, job_id: str, canvas_id: str, node_id: str) -> RetryNote:
        """What says, on the job and its node, that a failed attempt will be tried again; a database hiccup here
        must not replace the provider's error."""

        async def note(message: str, attempt: int) -> None:
            update = NodeUpdate(canvas_id=canvas_id, node_id=node_id, job_id=job_id, status=JobStatus.RUNNING)
            try:
                async with transaction(self.sessions) as session:
                    await canvas_nodes.note_retry(session, update=update, message=message, attempt=attempt)
            except SQLAlchemyError as error:
                activity.logger.warning("could not note a retry of job %s: %s", job_id, error)

        return note

    def _ingest(self, *, job_id: str, canvas_id: str, node_id: str, output_count: int) -> ImageIngest:
        """The sink of one provider step; its activity heartbeats on its own (`heartbeating`), so progress need not."""
        gate = ProgressGate(PROGRESS_EVERY_SECONDS)

        async def on_progress(fraction: float, message: str | None) -> None:
            if not gate.admit():
                return
            percent = round(fraction * 100, 1)
            try:
                await save_progress(
                    self.sessions,
                    ProgressUpdate(
                        job_id=job_id, canvas_id=canvas_id, node_id=node_id, progress=percent, message=message
                    ),
                )
            except (OperationalError, InterfaceError) as error:
                # Progress is a courtesy: a database restart must not fail (and re-bill) the provider call.
                activity.logger.warning("progress of %s not recorded, the database is unavailable: %s", job_id, error)

        return ImageIngest(
            storage=self.storage,
            http=self.http,
            settings=self.settings,
            key_prefix=job_key_prefix(canvas_id, job_id),
            output_count=output_count,
            on_progress=on_progress,
        )

    @activity.defn
    async def generate_image(self, call: ProviderCall) -> GenerationResult:
        """Synchronous providers: call, and stream every image into storage."""
        provider = self.providers[call.provider]
        call = replace(call, spec=provider.prepare(call.model, call.spec)[0])
        ingest = self._ingest(
            job_id=call.job_id, canvas_id=call.canvas_id, node_id=call.node_id, output_count=call.spec.n
        )
        sink = ResumableSink(activity.info().heartbeat_details, ingest)
        errors = provider_errors(
            call.provider, self._rate_limited(call.job_id), self._retrying(call.job_id, call.canvas_id, call.node_id)
        )
        async with errors, heartbeating(sink.heartbeat):
            await self._wait_turn(call.provider)
            with provider_span("generate", call.provider):
                provenance = await provider.generate(call, sink)
        return GenerationResult(images=sink.stored, provenance=provenance, storing_seconds=ingest.storing_seconds)

    @activity.defn
    async def submit_job(self, call: ProviderCall) -> SubmitResult:
        """Asynchronous providers: hand over the job with our webhook URL; returns the provider's job id, recorded
        as this job's before it is returned (the webhook route and stray cancels go by that record)."""
        provider = self.providers[call.provider]
        attempt = activity.info().attempt
        call_with_hook = replace(
            call,
            spec=provider.prepare(call.model, call.spec)[0],
            webhook_url=webhook_url_for(self.settings, call, attempt),
        )
        retrying = self._retrying(call.job_id, call.canvas_id, call.node_id)
        async with provider_errors(call.provider, self._rate_limited(call.job_id), retrying), heartbeating():
            await self._wait_turn(call.provider)
            with provider_span("submit", call.provider):
                submitted = await provider.submit(call_with_hook)
        async with self.sessions.begin() as session:
            await deliveries.record_provider_job(
                session,
                provider=call.provider,
                provider_job_id=submitted.provider_job_id,
                job_id=call.job_id,
                attempt=attempt,
            )
        return submitted

    @activity.defn
    async def poll_job(self, request: PollRequest) -> ProviderEvent:
        async with provider_errors(request.provider), heartbeating():
            await self._wait_turn(request.provider)
            with provider_span("poll", request.provider):
                return await self.providers[request.provider].poll(request.provider_job_id)

    @activity.defn
    async def store_outputs(self, request: StoreOutputsRequest) -> GenerationResult:
        """Download an asynchronous provider's results (streamed, size-capped, SSRF-guarded) into storage."""
        sink = self._ingest(
            job_id=request.job_id,
            canvas_id=request.canvas_id,
            node_id=request.node_id,
            output_count=max(1, len(request.urls)),
        )
        provider, outputs = self.providers[request.provider], ResumableSink((), sink)
        async with provider_errors(request.provider), heartbeating():
            with provider_span("download", request.provider):
                for reference in request.urls:
                    await provider.store_output(reference, outputs)
        return GenerationResult(images=sink.stored, provenance=request.provenance, storing_seconds=sink.storing_seconds)

    @activity.defn
    async def cancel_at_provider(self, request: CancelAtProvider) -> None:
        """Cancel a provider job of this job's; one recorded as another job's is left alone."""
        if request.job_id is not None:
            async with self.sessions() as session:
                owner = await deliveries.provider_job_owner(
                    session, provider=request.provider, provider_job_id=request.provider_job_id
                )
            if owner not in (None, request.job_id):
                activity.logger.warning(
                    "not cancelling %s job %s: it belongs to job %s", request.provider, request.provider_job_id, owner
                )
                return
        # Not paced: a cancel is rare, stops work the provider bills for, and Temporal's queue limit counts it.
        async with provider_errors(request.provider):
            with provider_span("cancel", request.provider):
                await self.providers[request.provider].cancel(request.provider_job_id)
