"""Canvas tokens: signed, expiring, bound to one canvas of one tenant and to the key that minted it; they open the
routes of their canvas alone and never reach the access log."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client

from api import canvas_tokens
from api.auth import TOKEN_ROUTES
from api.canvas_tokens import CanvasAccess, CanvasClaims, RedactTokens, mint, verify
from api.main import create_app
from core.config import Settings
from tests.fakes.server import free_port
from tests.fixtures.stack import Stack, make_settings, running_stack

SECRET = "s" * 32
KEY = "key-one"


def claims(**changes: object) -> CanvasClaims:
    base: dict[str, object] = {
        "tenant_id": "t_1",
        "workflow_id": "c-1",
        "access": CanvasAccess.READ,
        "expires_at": int(time.time()) + 60,
        "key_ref": "key_1",
    }
    return CanvasClaims(**(base | changes))  # type: ignore[arg-type]


def test_a_token_verifies_to_its_claims_until_it_expires() -> None:
    granted = claims()
    token = mint(SECRET, granted)
    assert verify(SECRET, token, time.time()) == granted
    assert verify(SECRET, token, granted.expires_at + 1) is None, "an expired token was taken"
    assert verify("x" * 32, token, time.time()) is None, "a token made under another secret was taken"


def test_a_token_changed_in_any_way_is_refused() -> None:
    token = mint(SECRET, claims())
    body, mac = token.removeprefix(canvas_tokens.TOKEN_PREFIX).split(".")
    widened = mint("attacker", claims(access=CanvasAccess.WRITE)).removeprefix(canvas_tokens.TOKEN_PREFIX)
    for forged in (
        f"{canvas_tokens.TOKEN_PREFIX}{widened.split('.')[0]}.{mac}",  # other claims under the real MAC
        f"{canvas_tokens.TOKEN_PREFIX}{body}.{mac[:-2]}AA",
        f"{canvas_tokens.TOKEN_PREFIX}{body}",
        canvas_tokens.TOKEN_PREFIX,
        "ct1..",
    ):
        assert verify(SECRET, forged, time.time()) is None, forged


def test_every_token_route_exists_in_the_app() -> None:
    paths = create_app(Settings(_env_file=None)).openapi()["paths"]  # type: ignore[call-arg]
    routes = {(method.upper(), path) for path, operations in paths.items() for method in operations}
    missing = set(TOKEN_ROUTES) - routes
    assert not missing, f"TOKEN_ROUTES names routes the app does not have: {missing}"


def test_the_access_log_shows_no_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/canvases/c/events?token=ct1.abc.def&x=1", "1.1", 200),
        None,
    )
    RedactTokens().filter(record)
    line = record.getMessage()
    assert "ct1.abc" not in line and "token=[redacted]&x=1" in line
    assert (
        canvas_tokens.redact("/v1/uploads/a.png?bytes=3&token=abcdef") == "/v1/uploads/a.png?bytes=3&token=[redacted]"
    )


@pytest.fixture
async def keyed_stack(stack_settings: Settings, temporal_client: Client) -> AsyncIterator[Stack]:
    """A stack whose only keys are API_KEYS (no admin key): the `default` tenant's."""
    settings = make_settings(stack_settings, API_KEYS=[KEY])
    async with running_stack(settings, temporal_client, workers=False) as stack:
        stack.api.headers["Authorization"] = f"Bearer {KEY}"
        yield stack


async def token_for(stack: Stack, canvas_id: str, access: str = "read", ttl: int = 60) -> str:
    answer = await stack.api.post(
        "/v1/canvas-tokens", json={"workflowId": canvas_id, "access": access, "ttlSeconds": ttl}
    )
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


async def test_a_read_token_reads_its_canvas_and_nothing_else(keyed_stack: Stack) -> None:
    canvas_id = "c-" + uuid.uuid4().hex[:8]
    assert (await keyed_stack.api.put(f"/v1/canvases/{canvas_id}", json={"nodes": [], "edges": []})).status_code == 200
    token = await token_for(keyed_stack, canvas_id)
    async with httpx.AsyncClient(base_url=keyed_stack.base_url, timeout=10) as browser:
        async with browser.stream("GET", f"/v1/canvases/{canvas_id}/events", params={"token": token}) as opened:
            assert opened.status_code == 200
        bearer = {"Authorization": f"Bearer {token}"}
        board = await browser.get(f"/v1/canvases/{canvas_id}", headers=bearer)
        other = await browser.get("/v1/canvases/c-other", headers=bearer)
        write = await browser.put(f"/v1/canvases/{canvas_id}/nodes/n1", headers=bearer, json={"data": {"x": 1}})
        endpoints = await browser.get("/v1/webhook-endpoints", headers=bearer)
        query_elsewhere = await browser.get(f"/v1/canvases/{canvas_id}", params={"token": token})
    assert board.status_code == 200 and board.json()["id"] == canvas_id
    assert (other.status_code, other.json()["code"]) == (403, "wrong_canvas")
    assert (write.status_code, write.json()["code"]) == (403, "read_only_token")
    assert (endpoints.status_code, endpoints.json()["code"]) == (403, "token_not_allowed")
    assert query_elsewhere.status_code == 401, "?token= worked off the event streams"
    assert (await keyed_stack.api.get(f"/v1/canvases/{canvas_id}/nodes")).json()["items"] == [], "the token wrote"


async def test_a_token_dies_with_the_key_that_minted_it(keyed_stack: Stack, temporal_client: Client) -> None:
    canvas_id = "c-" + uuid.uuid4().hex[:8]
    token = await token_for(keyed_stack, canvas_id)
    # The same deployment restarted with the key taken out of API_KEYS (on another port: the first still runs).
    rotated = make_settings(keyed_stack.settings, API_KEYS=["key-two"], APP_URL=f"http://127.0.0.1:{free_port()}")
    async with running_stack(rotated, temporal_client, workers=False) as after_rotation:
        answer = await after_rotation.api.get(
            f"/v1/canvases/{canvas_id}/nodes", headers={"Authorization": f"Bearer {token}"}
        )
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_canvas_token")


async def test_a_token_lives_no_longer_than_allowed(keyed_stack: Stack) -> None:
    too_long = keyed_stack.settings.CANVAS_TOKEN_MAX_SECONDS + 1
    answer = await keyed_stack.api.post(
        "/v1/canvas-tokens", json={"workflowId": "c-1", "access": "read", "ttlSeconds": too_long}
    )
    assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request")
