"""Who is calling, and what they may touch: tenant keys, the admin key and canvas tokens.

Authentication is on when ADMIN_API_KEY or API_KEYS is set; then every request but the webhooks, files, health and
metrics presents one of:
- a **tenant key** (`Authorization: Bearer ij_…`, made by `POST /v1/tenants/{id}/keys`, stored hashed) or one of
  API_KEYS, the `default` tenant's keys: everything of its tenant, nothing of any other;
- a **canvas token** (api/canvas_tokens.py): the routes in TOKEN_ROUTES, on its canvas only;
- the **admin key** (ADMIN_API_KEY): the tenant and key routes, and nothing else.
With authentication off, every caller is the `default` tenant with a key's powers.

Another tenant's resource answers 404, exactly as one that does not exist: a caller learns nothing of other
tenants. A canvas token on another canvas answers 403.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import canvas_tokens
from api.canvas_tokens import CanvasAccess, CanvasClaims
from api.deps import StateDep
from api.errors import ApiError
from models.schemas import ID_PATTERN
from models.tenancy import DEFAULT_TENANT, canvas_key, tenant_of
from store import tenants
from store.tenants import TenantLimits

_bearer = HTTPBearer(auto_error=False, description="A tenant API key, one of API_KEYS, or a canvas token.")

# What a canvas token may call, and whether it needs `write`. Every other route refuses tokens (403).
TOKEN_ROUTES: dict[tuple[str, str], CanvasAccess] = {
    ("GET", "/v1/canvases/{workflowId}"): CanvasAccess.READ,
    ("PUT", "/v1/canvases/{workflowId}"): CanvasAccess.WRITE,
    ("PATCH", "/v1/canvases/{workflowId}"): CanvasAccess.WRITE,
    ("GET", "/v1/canvases/{workflowId}/nodes"): CanvasAccess.READ,
    ("PUT", "/v1/canvases/{workflowId}/nodes/{nodeId}"): CanvasAccess.WRITE,
    ("GET", "/v1/canvases/{workflowId}/events"): CanvasAccess.READ,
    ("POST", "/v1/canvases/{workflowId}/runs"): CanvasAccess.WRITE,
    ("GET", "/v1/canvases/{workflowId}/runs/{runId}"): CanvasAccess.READ,
    ("POST", "/v1/canvases/{workflowId}/runs/{runId}/cancel"): CanvasAccess.WRITE,
    ("POST", "/v1/jobs"): CanvasAccess.WRITE,
    ("GET", "/v1/jobs"): CanvasAccess.READ,
    ("GET", "/v1/jobs/{jobId}"): CanvasAccess.READ,
    ("GET", "/v1/jobs/{jobId}/status"): CanvasAccess.READ,
    ("GET", "/v1/jobs/{jobId}/events"): CanvasAccess.READ,
    ("POST", "/v1/jobs/{jobId}/cancel"): CanvasAccess.WRITE,
    ("POST", "/v1/jobs/{jobId}/retry"): CanvasAccess.WRITE,
    ("POST", "/v1/uploads"): CanvasAccess.WRITE,
    ("GET", "/v1/providers"): CanvasAccess.READ,
    ("GET", "/v1/stats"): CanvasAccess.READ,
}
# Where `?token=` may stand in for the header: the event streams, which EventSource opens without headers.
QUERY_TOKEN_ROUTES = {("GET", "/v1/jobs/{jobId}/events"), ("GET", "/v1/canvases/{workflowId}/events")}


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, and a canvas token's canvas (as a canvas key; None for a key). `limits` are
    the tenant's own; the TENANT_* settings fill the unset ones (api/admission.py). A token's access
    was checked against the route before the Caller was made."""

    tenant_id: str
    limits: TenantLimits = field(default_factory=TenantLimits)
    canvas: str | None = None

    def key_of(self, workflow_id: str) -> str:
        """The canvas key of this tenant's `workflow_id`; 403 for a canvas token on another canvas."""
        key = canvas_key(self.tenant_id, workflow_id)
        if self.canvas is not None and key != self.canvas:
            raise ApiError(403, "wrong_canvas", f"This canvas token is for another canvas than {workflow_id!r}.")
        return key

    def sees(self, key: str) -> bool:
        """Whether a row on canvas `key` is this caller's to see (else it answers 404)."""
        return key == self.canvas if self.canvas is not None else tenant_of(key) == self.tenant_id


OPEN_CALLER = Caller(DEFAULT_TENANT)


def _route_of(request: Request) -> tuple[str, str]:
    route = request.scope.get("route")
    return request.method, route.path if isinstance(route, APIRoute) else request.url.path


def _presented(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    if credentials is not None:
        return credentials.credentials
    if _route_of(request) in QUERY_TOKEN_ROUTES:
        return request.query_params.get("token")
    return None


def _unauthorized(message: str, code: str = "unauthorized") -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="imagejobs"'})


async def _token_caller(state: StateDep, request: Request, token: str) -> Caller:
    claims = canvas_tokens.verify(state.settings.WEBHOOK_SECRET, token, time.time())
    limits = await _limits_while_minted_by_valid_key(state, claims) if claims else None
    if claims is None or limits is None:
        raise _unauthorized("The canvas token is wrong, expired or revoked; get a new one.", "invalid_canvas_token")
    needed = TOKEN_ROUTES.get(_route_of(request))
    if needed is None:
        raise ApiError(403, "token_not_allowed", "A canvas token cannot call this route; use an API key.")
    if needed is CanvasAccess.WRITE and claims.access is not CanvasAccess.WRITE:
        message = "This canvas token can read only; starting, cancelling and saving need a `write` token."
        raise ApiError(403, "read_only_token", message)
    return Caller(claims.tenant_id, limits, canvas_key(claims.tenant_id, claims.workflow_id))


async def _limits_while_minted_by_valid_key(state: StateDep, claims: CanvasClaims) -> TenantLimits | None:
    """The tenant's limits while the key that minted the token is valid; None once it is not."""
    settings = state.settings
    if claims.key_ref.startswith("env:"):
        minted_by_env_key = claims.tenant_id == DEFAULT_TENANT and any(
            hmac.compare_digest(claims.key_ref, canvas_tokens.env_key_ref(settings.WEBHOOK_SECRET, key))
            for key in settings.API_KEYS
        )
        return await _default_tenant_limits(state) if minted_by_env_key else None
    async with state.autocommit_sessions() as session:
        return await tenants.limits_while_key_valid(session, key_id=claims.key_ref, tenant_id=claims.tenant_id)


async def _default_tenant_limits(state: StateDep) -> TenantLimits:
    """The default tenant's own limits; only with ADMIN_API_KEY can they have been set, so only then are they read."""
    if not state.settings.ADMIN_API_KEY:
        return TenantLimits()
    async with state.autocommit_sessions() as session:
        return await tenants.tenant_limits(session)


@dataclass(frozen=True)
class Identity:
    """Who presented what: the tenant caller, the admin, or (with authentication off) anyone. `key_ref` names the
    key, for the canvas tokens it mints."""

    caller: Caller | None
    key_ref: str = "open"
    admin: bool = False


async def identify(
    request: Request, state: StateDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Identity:
    settings = state.settings
    if not settings.authentication_on:
        return Identity(OPEN_CALLER)
    presented = _presented(request, credentials)
    if not presented:
        raise _unauthorized("A valid API key is required: send `Authorization: Bearer <key>`.")
    if canvas_tokens.is_canvas_token(presented):
        return Identity(await _token_caller(state, request, presented), key_ref="token")
    if any(hmac.compare_digest(presented.encode(), key.encode()) for key in settings.API_KEYS):
        limits = TenantLimits()
        if settings.ADMIN_API_KEY:  # only then can the default tenant's limits have been set through the API
            async with state.autocommit_sessions() as session:
                limits = await tenants.tenant_limits(session)
        return Identity(
            Caller(DEFAULT_TENANT, limits), key_ref=canvas_tokens.env_key_ref(settings.WEBHOOK_SECRET, presented)
        )
    if settings.ADMIN_API_KEY and hmac.compare_digest(presented.encode(), settings.ADMIN_API_KEY.encode()):
        return Identity(None, key_ref="admin", admin=True)
    async with state.autocommit_sessions() as session:
        owner = await tenants.key_owner(session, key=presented)
    if owner is None:
        raise _unauthorized("This API key is not valid (wrong or revoked).")
    return Identity(Caller(owner.tenant_id, owner.limits), key_ref=owner.key_id)


IdentityDep = Annotated[Identity, Depends(identify)]


async def tenant_caller(identity: IdentityDep) -> Caller:
    """The tenant the request acts for; the admin key acts for none (403)."""
    if identity.caller is None:
        raise ApiError(
            403, "admin_key_not_a_tenant", "The admin key manages tenants and keys only; use a tenant's key."
        )
    return identity.caller


async def require_admin(identity: IdentityDep, state: StateDep) -> None:
    if not state.settings.ADMIN_API_KEY:
        raise ApiError(404, "tenants_off", "Tenants are managed only when the server sets ADMIN_API_KEY.")
    if not identity.admin:
        raise ApiError(403, "admin_only", "Only the admin key (ADMIN_API_KEY) manages tenants and keys.")


CallerDep = Annotated[Caller, Depends(tenant_caller)]


async def canvas_of_path(
    caller: CallerDep,
    workflow_id: Annotated[str, Path(alias="workflowId", pattern=ID_PATTERN, description="The canvas id.")],
) -> str:
    """The canvas key of the path's `workflowId`, for this caller's tenant (403 for a token on another canvas)."""
    return caller.key_of(workflow_id)


# A canvas is `workflowId` on the wire (the spec's name); behind the API it is its canvas key (models/tenancy.py).
CanvasKeyPath = Annotated[str, Depends(canvas_of_path)]
