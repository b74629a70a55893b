"""Tenants, their keys (admin key only), and the canvas tokens a tenant mints for its users' browsers."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Response
from pydantic import Field

from api import canvas_tokens
from api.auth import CallerDep, IdentityDep, require_admin
from api.canvas_tokens import CanvasAccess, CanvasClaims
from api.deps import SessionDep, StateDep
from api.errors import ApiError
from core.db import transaction
from models.schemas import ID_PATTERN, CamelModel, ErrorBody, RequestModel, SafeId
from models.tables import Tenant
from store import tenants
from store.tenants import TenantChange

router = APIRouter(prefix="/v1/tenants", tags=["tenants"], dependencies=[Depends(require_admin)])
token_router = APIRouter(tags=["tenants"])

TenantIdPath = Annotated[str, Path(alias="tenantId", pattern=ID_PATTERN)]
KeyIdPath = Annotated[str, Path(alias="keyId", pattern=ID_PATTERN)]
ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorBody, "description": "Not the admin key."},
    404: {"model": ErrorBody},
    422: {"model": ErrorBody},
}


class TenantView(CamelModel):
    id: str
    name: str
    starts_per_minute: int | None = Field(default=None, description="Starts allowed per minute; absent: the default.")
    max_concurrent_jobs: int | None = Field(default=None, description="Jobs running at once; absent: the default.")
    budget_usd_per_day: float | None = Field(default=None, description="USD per UTC day; absent: the default.")
    created_at: datetime


class TenantList(CamelModel):
    items: list[TenantView]


class NewTenant(RequestModel):
    name: str = Field(min_length=1, max_length=200, examples=["Acme Design"])


class TenantUpdate(RequestModel):
    """Only the fields sent change; a limit sent as null goes back to the deployment's default."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    starts_per_minute: int | None = Field(default=None, ge=1, le=1_000_000)
    max_concurrent_jobs: int | None = Field(default=None, ge=1, le=1_000_000)
    budget_usd_per_day: float | None = Field(default=None, ge=0)


class KeyView(CamelModel):
    id: str
    name: str | None = None
    prefix: str = Field(description="The key's first characters, to tell keys apart.")
    created_at: datetime
    revoked_at: datetime | None = None


class KeyList(CamelModel):
    items: list[KeyView]


class NewKeyRequest(RequestModel):
    name: str | None = Field(default=None, max_length=200, examples=["production backend"])


class NewKey(KeyView):
    key: str = Field(description="The key itself: shown this once, stored only hashed.")


async def tenant_or_404(session: SessionDep, tenant_id: str) -> Tenant:
    tenant = await tenants.get_tenant(session, tenant_id=tenant_id)
    if tenant is None:
        raise ApiError(404, "tenant_not_found", f"No tenant {tenant_id!r}.")
    return tenant


@router.post("", status_code=201, response_model=TenantView, responses=ERRORS, response_model_exclude_none=True)
async def create_tenant(body: NewTenant, state: StateDep) -> TenantView:
    """A new tenant, with the default limits and no keys yet."""
    async with transaction(state.sessions) as session:
        return TenantView.model_validate(await tenants.create_tenant(session, name=body.name))


@router.get("", response_model=TenantList, responses=ERRORS, response_model_exclude_none=True)
async def list_tenants(session: SessionDep) -> TenantList:
    return TenantList(items=[TenantView.model_validate(tenant) for tenant in await tenants.list_tenants(session)])


@router.get("/{tenantId}", response_model=TenantView, responses=ERRORS, response_model_exclude_none=True)
async def get_tenant(tenant_id: TenantIdPath, session: SessionDep) -> TenantView:
    return TenantView.model_validate(await tenant_or_404(session, tenant_id))


@router.patch("/{tenantId}", response_model=TenantView, responses=ERRORS, response_model_exclude_none=True)
async def update_tenant(
    tenant_id: TenantIdPath, body: TenantUpdate, state: StateDep, after: BackgroundTasks
) -> TenantView:
    """Rename the tenant or set its limits: `startsPerMinute` (more answer 429 `rate_limited`),
    `maxConcurrentJobs` (jobs waiting in line for a slot the new cap frees start at once) and `budgetUsdPerDay`."""
    given = body.model_fields_set
    if "name" in given and body.name is None:
        raise ApiError(422, "invalid_request", "A tenant's name cannot be null.", [{"field": "name"}])
    async with transaction(state.sessions) as session:
        tenant = await tenant_or_404(session, tenant_id)
        change = TenantChange(given=frozenset(given), **body.model_dump(include=given))
        await tenants.update_tenant(session, tenant=tenant, change=change)
        view = TenantView.model_validate(tenant)
    if "max_concurrent_jobs" in given:
        after.add_task(state.handoff.wake_line, tenant_id)
    return view


@router.post("/{tenantId}/keys", status_code=201, response_model=NewKey, responses=ERRORS)
async def create_key(tenant_id: TenantIdPath, state: StateDep, body: NewKeyRequest | None = None) -> NewKey:
    """A new API key for the tenant. The answer's `key` is shown once: only its hash is stored."""
    async with transaction(state.sessions) as session:
        await tenant_or_404(session, tenant_id)
        made = await tenants.create_key(session, tenant_id=tenant_id, name=(body or NewKeyRequest()).name)
    return NewKey(**KeyView.model_validate(made.row).model_dump(), key=made.key)


@router.get("/{tenantId}/keys", response_model=KeyList, responses=ERRORS, response_model_exclude_none=True)
async def list_keys(tenant_id: TenantIdPath, session: SessionDep) -> KeyList:
    """The tenant's keys, revoked ones included: id, name, prefix, and when made and revoked. Never the keys."""
    await tenant_or_404(session, tenant_id)
    return KeyList(items=[KeyView.model_validate(key) for key in await tenants.list_keys(session, tenant_id=tenant_id)])


@router.delete("/{tenantId}/keys/{keyId}", status_code=204, responses=ERRORS)
async def revoke_key(tenant_id: TenantIdPath, key_id: KeyIdPath, state: StateDep) -> Response:
    """Revoke the key: every API process refuses it, and the canvas tokens it minted, from the next request."""
    async with transaction(state.sessions) as session:
        if not await tenants.revoke_key(session, tenant_id=tenant_id, key_id=key_id):
            raise ApiError(404, "key_not_found", f"Tenant {tenant_id!r} has no key {key_id!r}.")
    return Response(status_code=204)


class CanvasTokenRequest(RequestModel):
    workflow_id: SafeId = Field(description="The canvas the token opens.")
    access: CanvasAccess = Field(description="`read`: look only; `write`: also start, cancel and save.")
    ttl_seconds: int = Field(default=3600, ge=1, description="How long it works; at most CANVAS_TOKEN_MAX_SECONDS.")


class CanvasToken(CamelModel):
    token: str = Field(description="Send as `Authorization: Bearer`, or as `?token=` on the event streams.")
    expires_at: datetime


@token_router.post(
    "/v1/canvas-tokens",
    status_code=201,
    response_model=CanvasToken,
    responses={401: {"model": ErrorBody}, 403: {"model": ErrorBody}, 422: {"model": ErrorBody}},
)
async def create_canvas_token(
    body: CanvasTokenRequest, caller: CallerDep, identity: IdentityDep, state: StateDep
) -> CanvasToken:
    """A short-lived token for one canvas, for a browser: a canvas app's backend mints one per user session with
    its tenant key, so the key itself never reaches the browser. It works only while that key is valid."""
    limit = state.settings.CANVAS_TOKEN_MAX_SECONDS
    if body.ttl_seconds > limit:
        message = f"ttlSeconds is at most {limit} (CANVAS_TOKEN_MAX_SECONDS)."
        raise ApiError(422, "invalid_request", message, [{"field": "ttlSeconds", "message": message}])
    # Claims hold whole seconds; rounding the expiry up keeps a token alive for at least the ttl it asked for.
    expires_at = datetime.fromtimestamp(math.ceil(time.time() + body.ttl_seconds), UTC)
    claims = CanvasClaims(
        tenant_id=caller.tenant_id,
        workflow_id=body.workflow_id,
        access=body.access,
        expires_at=int(expires_at.timestamp()),
        key_ref=identity.key_ref,
    )
    return CanvasToken(token=canvas_tokens.mint(state.settings.WEBHOOK_SECRET, claims), expires_at=expires_at)
