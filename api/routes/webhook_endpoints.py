"""Webhooks to your app: endpoints that hear of jobs and canvas runs ending, and each event's delivery log.

Every event is signed per Standard Webhooks (core/webhook_signing.py), retried on Svix's schedule until it lands
(workflows/outbound_webhook.py), and kept 30 days with every attempt's answer, to read and to replay.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from api.auth import Caller, CallerDep
from api.deps import SessionDep, StateDep, TemporalDep
from api.errors import ApiError
from core.db import transaction
from core.netguard import DownloadRefused, check_download_url
from handoff.starts import start_delivery
from models.payloads import OutboundDeliveryInput
from models.schemas import (
    ID_PATTERN,
    DeliveryList,
    DeliveryView,
    ErrorBody,
    WebhookEndpointCreate,
    WebhookEndpointList,
    WebhookEndpointUpdate,
    WebhookEndpointView,
    WebhookEndpointWithSecret,
)
from models.tables import WebhookEndpoint
from models.vocabulary import DeliveryStatus
from store import outbound
from store.outbound import EndpointChange

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhooks to your app"])

EndpointIdPath = Annotated[str, Path(alias="endpointId", pattern=ID_PATTERN)]
DeliveryIdPath = Annotated[str, Path(alias="deliveryId", pattern=ID_PATTERN)]
ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody}, 422: {"model": ErrorBody}}


async def checked_url(state: StateDep, url: str) -> str:
    """An endpoint URL must be http(s) on a public address (or a host OUTBOUND_ALLOWLIST names): 422 otherwise."""
    try:
        await check_download_url(url, state.settings.OUTBOUND_ALLOWLIST, allowlist_setting="OUTBOUND_ALLOWLIST")
    except DownloadRefused as error:
        reason = str(error)
    except OSError as error:  # socket.gaierror: its host does not resolve (here and now)
        reason = f"its host cannot be resolved ({error.strerror or error})"
    else:
        return url
    message = f"The endpoint URL cannot be used: {reason}."
    raise ApiError(422, "invalid_endpoint_url", message, [{"field": "url", "message": reason}])


async def endpoint_or_404(session: AsyncSession, endpoint_id: str, caller: Caller) -> WebhookEndpoint:
    """The endpoint, when it is the caller's tenant's (another tenant's answers 404, as a missing one)."""
    endpoint = await outbound.get_endpoint(session, endpoint_id=endpoint_id)
    if endpoint is None or endpoint.tenant_id != caller.tenant_id:
        raise ApiError(404, "endpoint_not_found", f"No webhook endpoint {endpoint_id!r}.")
    return endpoint


@router.post("", status_code=201, response_model=WebhookEndpointWithSecret, responses=ERRORS)
async def create_endpoint(body: WebhookEndpointCreate, state: StateDep, caller: CallerDep) -> WebhookEndpointWithSecret:
    """A new endpoint of the caller's tenant, with its signing secret (shown here and after a rotation only); it
    hears of the tenant's jobs and canvas runs only."""
    url = await checked_url(state, body.url)
    async with transaction(state.sessions) as session:
        events = [str(event) for event in body.events] if body.events else None
        endpoint = await outbound.create_endpoint(
            session, tenant_id=caller.tenant_id, url=url, events=events, description=body.description
        )
        return WebhookEndpointWithSecret.of(endpoint)


@router.get("", response_model=WebhookEndpointList)
async def list_endpoints(session: SessionDep, caller: CallerDep) -> WebhookEndpointList:
    """The tenant's endpoints, the newest first."""
    found = await outbound.list_endpoints(session, tenant_id=caller.tenant_id)
    return WebhookEndpointList(items=[WebhookEndpointView.of(item) for item in found])


@router.get("/{endpointId}", response_model=WebhookEndpointView, responses=ERRORS)
async def get_endpoint(endpoint_id: EndpointIdPath, session: SessionDep, caller: CallerDep) -> WebhookEndpointView:
    return WebhookEndpointView.of(await endpoint_or_404(session, endpoint_id, caller))


@router.patch("/{endpointId}", response_model=WebhookEndpointView, responses=ERRORS)
async def update_endpoint(
    endpoint_id: EndpointIdPath, body: WebhookEndpointUpdate, state: StateDep, caller: CallerDep
) -> WebhookEndpointView:
    """Change the URL, the events or the description, or disable and enable it again."""
    url = await checked_url(state, body.url) if body.url is not None else None
    change = EndpointChange(
        url=url,
        events=[str(event) for event in body.events] if body.events else None,
        events_given="events" in body.model_fields_set,
        disabled=body.disabled,
        description=body.description,
    )
    async with transaction(state.sessions) as session:
        endpoint = await endpoint_or_404(session, endpoint_id, caller)
        await outbound.update_endpoint(session, endpoint=endpoint, change=change)
        return WebhookEndpointView.of(endpoint)


@router.delete("/{endpointId}", status_code=204, responses=ERRORS)
async def delete_endpoint(endpoint_id: EndpointIdPath, state: StateDep, caller: CallerDep) -> Response:
    """The endpoint and its delivery log; nothing more is sent to it."""
    async with transaction(state.sessions) as session:
        await endpoint_or_404(session, endpoint_id, caller)
        if not await outbound.delete_endpoint(session, endpoint_id=endpoint_id):
            raise ApiError(404, "endpoint_not_found", f"No webhook endpoint {endpoint_id!r}.")
    return Response(status_code=204)


@router.post("/{endpointId}/rotate-secret", response_model=WebhookEndpointWithSecret, responses=ERRORS)
async def rotate_secret(endpoint_id: EndpointIdPath, state: StateDep, caller: CallerDep) -> WebhookEndpointWithSecret:
    """A new secret. For 24 h every request is signed with both, the new one first, so your server can switch
    to the new secret at any moment of that day."""
    async with transaction(state.sessions) as session:
        endpoint = await endpoint_or_404(session, endpoint_id, caller)
        await outbound.rotate_secret(session, endpoint=endpoint)
        return WebhookEndpointWithSecret.of(endpoint)


@router.get("/{endpointId}/deliveries", response_model=DeliveryList, responses=ERRORS)
async def list_deliveries(
    endpoint_id: EndpointIdPath,
    session: SessionDep,
    caller: CallerDep,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> DeliveryList:
    """The endpoint's deliveries, newest first (kept 30 days): each attempt's answer and the next attempt."""
    await endpoint_or_404(session, endpoint_id, caller)
    found = await outbound.list_deliveries(session, endpoint_id=endpoint_id, status=status, limit=limit)
    return DeliveryList(items=[DeliveryView.of(delivery) for delivery in found])


@router.post(
    "/{endpointId}/deliveries/{deliveryId}/replay", status_code=202, response_model=DeliveryView, responses=ERRORS
)
async def replay_delivery(
    endpoint_id: EndpointIdPath,
    delivery_id: DeliveryIdPath,
    state: StateDep,
    caller: CallerDep,
    temporal: TemporalDep,
) -> DeliveryView:
    """Send the event again now, with the same `webhook-id` and body (one attempt; its answer is logged)."""
    async with transaction(state.sessions) as session:
        found = await outbound.delivery_and_endpoint(session, delivery_id=delivery_id)
        if found is None or found[1].id != endpoint_id or found[1].tenant_id != caller.tenant_id:
            raise ApiError(404, "delivery_not_found", f"No delivery {delivery_id!r} to endpoint {endpoint_id!r}.")
        delivery = found[0]
        await outbound.reopen_for_replay(session, delivery=delivery)
        view = DeliveryView.of(delivery)
    replay = OutboundDeliveryInput(delivery_id, [0.0])
    try:
        await start_delivery(temporal, state.settings, replay, id=f"{delivery_id}-replay-{uuid.uuid4().hex[:8]}")
    except RPCError as error:
        raise ApiError(503, "temporal_unavailable", f"Could not replay the delivery: {error.message}") from error
    return view
