"""Stream tokens open the two event streams and nothing else, die with their key, keep to their canvas, and
never reach the access log."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client

from api import stream_tokens
from api.stream_tokens import RedactTokens, StreamTarget, mint, stream_target, verify
from core.config import Settings
from tests.fixtures.stack import Stack, make_settings, running_stack

SECRET = "s" * 32
KEY = "key-one"


def test_only_the_two_stream_routes_take_a_token_and_only_by_get() -> None:
    assert stream_target("GET", "/v1/canvases/c-1/events") == StreamTarget("canvas", "c-1")
    assert stream_target("GET", "/v1/jobs/job_1/events") == StreamTarget("job", "job_1")
    for method, path in [
        ("PUT", "/v1/canvases/c-1/nodes/events"),
        ("GET", "/v1/canvases/c-1/nodes/events"),
        ("POST", "/v1/canvases/c-1/events"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/job_1/events/more"),
        ("GET", "/x/v1/jobs/job_1/events"),
    ]:
        assert stream_target(method, path) is None, (method, path)


def test_a_token_keeps_to_its_canvas_its_key_and_its_lifetime() -> None:
    now = time.time()
    canvas = StreamTarget("canvas", "c-1")
    bound = mint(SECRET, KEY, int(now) + 60, "c-1")
    anywhere = mint(SECRET, KEY, int(now) + 60)

    assert verify(SECRET, bound, [KEY], canvas, now)
    assert not verify(SECRET, bound, [KEY], StreamTarget("canvas", "c-2"), now)
    assert not verify(SECRET, bound, [KEY], StreamTarget("job", "c-1"), now)
    assert verify(SECRET, anywhere, [KEY], StreamTarget("job", "job_1"), now)
    assert not verify(SECRET, bound, ["another-key"], canvas, now), "a token outlived the key that minted it"
    assert not verify(SECRET, bound, [KEY], canvas, now + 61), "an expired token was taken"
    assert not verify("x" * 32, bound, [KEY], canvas, now)
    assert mint(SECRET, "another-key", int(now) + 60, "c-1") != bound, "two callers got the same token"
    forged = bound.replace(".c.", ".a.")
    assert not verify(SECRET, forged, [KEY], canvas, now)


def test_the_access_log_shows_no_token() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/v1/canvases/c/events?streamToken=123.abc.c.def&x=1", "1.1", 200),
        None,
    )
    RedactTokens().filter(record)
    line = record.getMessage()
    assert "123.abc" not in line and "streamToken=[redacted]&x=1" in line
    assert (
        stream_tokens.redact("/v1/uploads/a.png?bytes=3&token=abcdef") == "/v1/uploads/a.png?bytes=3&token=[redacted]"
    )


@pytest.fixture
async def keyed_stack(stack_settings: Settings, temporal_client: Client) -> AsyncIterator[Stack]:
    settings = make_settings(stack_settings, API_KEYS=[KEY])
    async with running_stack(settings, temporal_client, workers=False) as stack:
        stack.api.headers["Authorization"] = f"Bearer {KEY}"
        yield stack


async def token_for(stack: Stack, canvas_id: str | None = None) -> str:
    body = {"workflowId": canvas_id} if canvas_id else None
    answer = await stack.api.post("/v1/stream-tokens", json=body)
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


async def test_a_stream_token_opens_its_canvas_stream_and_nothing_else(keyed_stack: Stack) -> None:
    canvas_id = "c-" + uuid.uuid4().hex[:8]
    token = await token_for(keyed_stack, canvas_id)
    async with httpx.AsyncClient(base_url=keyed_stack.base_url, timeout=10) as anonymous:
        async with anonymous.stream("GET", f"/v1/canvases/{canvas_id}/events", params={"streamToken": token}) as opened:
            assert opened.status_code == 200
        other = await anonymous.get("/v1/canvases/c-other/events", params={"streamToken": token})
        write = await anonymous.put(
            f"/v1/canvases/{canvas_id}/nodes/events", params={"streamToken": token}, json={"data": {"x": 1}}
        )
        listing = await anonymous.get("/v1/jobs", params={"streamToken": token})
    assert (other.status_code, other.json()["code"]) == (401, "invalid_stream_token")
    assert write.status_code == 401, write.text
    assert listing.status_code == 401, listing.text
    assert (await keyed_stack.api.get(f"/v1/canvases/{canvas_id}/nodes")).json()["items"] == [], "the token wrote"
