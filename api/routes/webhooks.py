"""Provider callbacks: verify, dedupe, signal the job's workflow, answer fast.

The handler downloads nothing and calls no provider: the workflow does the work. When the signal cannot be
delivered it answers 503, so the provider's own retry delivers the event later and nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from fastapi import APIRouter, Request
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api.deps import SessionDep, StateDep, TemporalDep
from api.errors import ApiError
from core import runs
from core.config import Settings
from core.db import transaction
from core.jobs import signal_provider_event
from models.errors import WebhookRejected
from models.payloads import ProviderEvent
from models.schemas import ErrorBody
from models.vocabulary import TERMINAL_STATUSES, EventKind
from providers.base import ImageProvider
from providers.midjourney import JOB_TOKEN_HEADER
from providers.webhooks import verify_generic_signature

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

SIGNAL_TIMEOUT_SECONDS = 3.0


def authenticate_webhook(
    provider: ImageProvider, settings: Settings, job_id: str, headers: Mapping[str, str], body: bytes
) -> None:
    """The provider's own scheme, or our generic one (hex HMAC of the body with WEBHOOK_SECRET, used by relays).

    Raises WebhookRejected with the provider's reason when neither holds.
    """
    signature = headers.get("webhook-signature", "")
    if signature and not signature.startswith("v1"):
        verify_generic_signature(settings.WEBHOOK_SECRET, headers, body)
        return
    provider.verify_webhook(job_id, headers, body)


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


async def signal_workflow(temporal: Client, job_id: str, event: ProviderEvent) -> bool:
    """Deliver the event; False when the workflow has already ended (a late webhook)."""
    try:
        # The client retries an unreachable server for about ten seconds, longer than providers wait for an
        # answer; a prompt 503 gets the delivery retried (a repeat signal is deduplicated by the workflow).
        async with asyncio.timeout(SIGNAL_TIMEOUT_SECONDS):
            await signal_provider_event(temporal, job_id, event)
    except (RPCError, TimeoutError) as error:
        if isinstance(error, RPCError) and error.status == RPCStatusCode.NOT_FOUND:
            return False
        raise ApiError(503, "temporal_unavailable", "The event could not be delivered; retry later.") from error
    return True


@router.post(
    "/{provider}/{job_id}",
    responses={
        401: {"model": ErrorBody},
        404: {"model": ErrorBody},
        413: {"model": ErrorBody},
        503: {"model": ErrorBody},
    },
)
async def receive_webhook(
    provider: str, job_id: str, request: Request, state: StateDep, session: SessionDep, temporal: TemporalDep
) -> dict[str, str]:
    """A provider's callback for one job (authenticated by signature or per-job token, not by API key)."""
    adapter = state.providers.get(provider)
    if adapter is None or not adapter.supports_webhooks:
        raise ApiError(404, "unknown_provider", f"No webhooks are taken for provider {provider!r}.")
    body = await read_capped_body(request, state.settings.MAX_WEBHOOK_BYTES)
    headers: Mapping[str, str] = {**request.headers, JOB_TOKEN_HEADER: request.query_params.get("token", "")}
    try:
        authenticate_webhook(adapter, state.settings, job_id, headers, body)
        event = adapter.parse_webhook(body, headers)
    except WebhookRejected as error:
        log.warning("rejected %s webhook for %s: %s", provider, job_id, error)
        raise ApiError(401, "invalid_webhook_signature", f"Webhook rejected: {error}") from error
    dedupe_key = f"webhook:{event.delivery_id}" if event.delivery_id else None
    target = await runs.webhook_target(session, job_id, dedupe_key)
    if target is None:
        raise ApiError(404, "job_not_found", f"No job {job_id!r}.")
    status, seen = target
    if seen:
        return {"status": "duplicate"}
    finished = status in TERMINAL_STATUSES
    # Hand the connection back before the Temporal call and the write: a request that held one connection while
    # waiting for a second would, in a storm of webhooks, leave every request waiting on every other.
    await session.rollback()
    if finished or not await signal_workflow(temporal, job_id, event):
        return {"status": "ignored"}
    async with transaction(state.sessions) as write:
        await runs.add_event(
            write,
            job_id,
            EventKind.WEBHOOK,
            f"{provider} reported {event.status}" + (f" ({event.progress:.0f}%)" if event.progress is not None else ""),
            {"providerStatus": event.status, "progress": event.progress, "deliveryId": event.delivery_id},
            dedupe_key=dedupe_key,
        )
    return {"status": "accepted"}
