"""Provider callbacks: verify, record, answer fast, then signal the job's workflow.

The handler downloads nothing and calls no provider: the workflow does the work. It answers once the delivery is
committed (its timeline event and a pending signal); the signal follows (handoff/sweep.py), so an answer never
waits on Temporal and a delivery taken is never lost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NoReturn

from fastapi import APIRouter, BackgroundTasks, Query, Request
from sqlalchemy.exc import SQLAlchemyError

from api.auth import CallerDep
from api.deps import AppState, JobIdPath, SessionDep, StateDep
from api.errors import ApiError
from api.limits import JSON_TOO_DEEP_MESSAGE
from core.config import Settings
from core.db import transaction
from core.logs import RateLimitedLog
from core.metrics import WEBHOOKS
from handoff.sweep import event_json
from models.errors import WebhookRejected
from models.guards import json_nesting_exceeds
from models.payloads import ProviderEvent
from models.schemas import ErrorBody, WebhookRefusalView
from models.vocabulary import TERMINAL_STATUSES
from providers.base import ImageProvider
from providers.webhooks import verify_generic_signature, verify_job_token
from store import deliveries, jsonb
from store.deliveries import Delivery, WebhookTarget

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class ForgedUrl(WebhookRejected):
    """The delivery's URL token does not hold: nobody we handed a URL to sent it."""


def authenticate_webhook(
    provider: ImageProvider,
    settings: Settings,
    job_id: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
) -> ProviderEvent:
    """The delivery's event, once both proofs hold; raises ForgedUrl or WebhookRejected with the reason otherwise.

    1. The URL's token: made for this provider, this job and one submit attempt (neither signature covers the URL).
    2. The provider's own signature, or our generic one (hex HMAC of the body with WEBHOOK_SECRET, used by relays).
    """
    try:
        verify_job_token(settings.WEBHOOK_SECRET, provider.name, job_id, query.get("attempt"), query.get("token"))
    except WebhookRejected as error:
        raise ForgedUrl(str(error)) from None
    signature = headers.get("webhook-signature", "")
    if signature and not signature.startswith("v1") and not provider.signs_with_hex_hmac:
        verify_generic_signature(settings.WEBHOOK_SECRET, headers, body)
    else:
        provider.verify_webhook(job_id, headers, body)
    return provider.parse_webhook(body, headers)


def binding_problem(target: WebhookTarget, job_id: str, provider: str) -> str | None:
    """Why an authentic delivery is still not this job's to take, or None."""
    if target.provider != provider:
        return f"job {job_id} runs on {target.provider}, not {provider}"
    if target.owner is not None and target.owner != job_id:
        return f"the {provider} job it reports on belongs to another job"
    return None


# Forged deliveries are logged at most once per this many seconds per process (with how many came meanwhile).
FORGED_LOG_SECONDS = 10.0
forged_log = RateLimitedLog(log, FORGED_LOG_SECONDS)


def refuse_forged(provider: str, job_id: str, reason: str) -> NoReturn:
    """A delivery whose URL token does not hold: counted and logged (rate-limited), never stored. Anyone can send
    these, as fast as they like; a row for each would fill the database and bury the refusals that matter."""
    WEBHOOKS.labels(provider, "forged").inc()
    forged_log.warning("refused forged %s webhooks (a wrong URL token), e.g. for %s: %s", provider, job_id, reason)
    raise ApiError(401, "invalid_webhook_signature", f"Webhook refused: {reason}")


async def refuse(state: AppState, provider: str, job_id: str, status: int, code: str, reason: str) -> NoReturn:
    """Log and record the refusal for operators, then answer it; a failed record never hides the answer. Only
    deliveries to an authentic URL get here: their refusal means something to an operator."""
    WEBHOOKS.labels(provider, "refused").inc()
    log.warning("refused %s webhook for %s (%s): %s", provider, job_id, code, reason)
    try:
        async with transaction(state.sessions) as session:
            await deliveries.record_refusal(session, provider=provider, job_id=job_id, code=code, reason=reason)
    except SQLAlchemyError:
        log.exception("could not record the refused webhook for %s", job_id)
    raise ApiError(status, code, f"Webhook refused: {reason}")


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed `limit`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, "payload_too_large", f"Webhook bodies are limited to {limit} bytes.")
    return bytes(body)


@router.post(
    "/{provider}/{jobId}",
    responses={
        401: {"model": ErrorBody, "description": "The URL's token or the body's signature does not hold."},
        404: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "Authentic, but about a provider job another job owns."},
        413: {"model": ErrorBody},
        503: {"model": ErrorBody, "description": "Overloaded, or the database unreachable: retry after Retry-After."},
    },
)
async def receive_webhook(
    provider: str, job_id: JobIdPath, request: Request, state: StateDep, after: BackgroundTasks
) -> dict[str, str]:
    """A provider's callback for one job (authenticated by the URL's token and the body's signature, not by API
    key), taken only when the provider job it reports on is this job's. Under more than WEBHOOK_MAX_IN_FLIGHT at
    once it answers 503 with Retry-After, never a dropped connection."""
    with state.webhooks_in_flight.slot():
        return await handle_webhook(provider, job_id, request, state, after)


async def handle_webhook(
    provider: str, job_id: str, request: Request, state: AppState, after: BackgroundTasks
) -> dict[str, str]:
    adapter = state.providers.get(provider)
    if adapter is None or not adapter.supports_webhooks:
        raise ApiError(404, "unknown_provider", f"No webhooks are taken for provider {provider!r}.")
    body = await read_capped_body(request, state.settings.MAX_WEBHOOK_BYTES)
    if json_nesting_exceeds(body):  # whatever its Content-Type says: it is parsed as JSON
        raise ApiError(422, "json_too_deep", JSON_TOO_DEEP_MESSAGE)
    try:
        event = authenticate_webhook(adapter, state.settings, job_id, request.query_params, request.headers, body)
    except ForgedUrl as error:
        refuse_forged(provider, job_id, str(error))
    except WebhookRejected as error:
        await refuse(state, provider, job_id, 401, "invalid_webhook_signature", str(error))
    delivery = Delivery(
        job_id=job_id,
        provider=provider,
        provider_job_id=event.provenance.provider_job_id,
        dedupe_key=f"webhook:{event.delivery_id}" if event.delivery_id else None,
        timeline=timeline_json(provider, event),
        event=event_json(event),
    )
    # One statement on an autocommit session, holding a connection only while it runs: in a storm of webhooks a
    # request that held one while waiting on anything else would leave every request waiting on every other.
    async with state.autocommit_sessions() as session:
        target = await deliveries.take_delivery(session, delivery=delivery)
    if target is None:
        await refuse(state, provider, job_id, 404, "job_not_found", f"no job {job_id!r}")
    problem = binding_problem(target, job_id, provider)
    if problem is not None:
        await refuse(state, provider, job_id, 409, "webhook_not_for_this_job", problem)
    result = delivery_result(target)
    if result == "accepted" and target.signal_id is not None:
        after.add_task(state.handoff.signal, target.signal_id, job_id, event)
    WEBHOOKS.labels(provider, result).inc()
    return {"status": result}


def delivery_result(target: WebhookTarget) -> str:
    """What an authentic delivery for this job became."""
    if target.seen:
        return "duplicate"
    if target.status in TERMINAL_STATUSES:
        return "ignored"
    if target.signal_id is None:  # the same delivery, taken by a concurrent request
        return "duplicate"
    return "accepted"


def timeline_json(provider: str, event: ProviderEvent) -> str:
    """The delivery as the job's timeline shows it (a `webhook` event)."""
    progress = f" ({event.progress:.0f}%)" if event.progress is not None else ""
    return jsonb.storable_json(
        {
            "providerStatus": event.status,
            "progress": event.progress,
            "deliveryId": event.delivery_id,
            "message": f"{provider} reported {event.status}{progress}",
        },
        what="webhook event",
    )


@router.get("/refusals", responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}})
async def list_refusals(
    session: SessionDep, caller: CallerDep, limit: int = Query(default=100, ge=1, le=1000)
) -> list[WebhookRefusalView]:
    """The deliveries the route refused lately that named the tenant's jobs, newest first: which job, and why."""
    found = await deliveries.recent_refusals(session, tenant_id=caller.tenant_id, limit=limit)
    return [WebhookRefusalView.of(refusal) for refusal in found]
