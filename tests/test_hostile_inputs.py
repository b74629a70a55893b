"""Inputs a hostile caller sends: each is refused with a 4xx before anything is stored or started."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from models.guards import MAX_BODY_JSON_DEPTH, MAX_JSON_DEPTH, STORED_WRAPPER_DEPTH, json_depth, json_nesting_exceeds
from tests.fixtures.stack import Stack, make_settings, running_stack


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"k": value}
    return value


def test_depth_counts_objects_and_arrays_without_recursion() -> None:
    assert json_depth(1) == 0
    assert json_depth({"a": [1, {"b": 2}]}) == 3
    # Stops counting past the deepest limit any check applies; no RecursionError.
    assert json_depth(nested(5000)) == MAX_JSON_DEPTH + STORED_WRAPPER_DEPTH + 1


async def runs_on(sessions: async_sessionmaker[AsyncSession], canvas_id: str) -> int:
    async with sessions() as session:
        found = await session.execute(text("SELECT count(*) FROM runs WHERE canvas_id = :c"), {"c": canvas_id})
        return int(found.scalar_one())


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 300, 900])
async def test_deep_metadata_is_refused_and_nothing_is_stored(
    depth: int, stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    canvas_id = "c-" + uuid.uuid4().hex[:8]
    body = {"workflowId": canvas_id, "nodeId": "n", "promptSpec": {"basePrompt": "x"}, "metadata": nested(depth)}
    answer = await stack.api.post("/v1/jobs", json=body)
    assert answer.status_code == 422, answer.text[:300]
    assert "nests deeper than" in answer.json()["message"]
    assert await runs_on(db_sessions, canvas_id) == 0
    listing = await stack.api.get("/v1/jobs", params={"limit": 200})
    assert listing.status_code == 200


async def test_metadata_at_the_depth_limit_is_taken(stack: Stack) -> None:
    body = {"workflowId": "c-depth", "nodeId": "n", "promptSpec": {"basePrompt": "x"}, "metadata": nested(10)}
    assert (await stack.api.post("/v1/jobs", json=body)).status_code == 202


async def test_deep_node_data_is_refused(stack: Stack) -> None:
    answer = await stack.api.put("/v1/canvases/c-deep/nodes/n1", json={"data": nested(40)})
    assert answer.status_code == 422, answer.text[:300]


async def test_metadata_and_node_data_share_one_depth_limit(stack: Stack) -> None:
    """Free JSON nests at most MAX_JSON_DEPTH levels, whether it is a job's metadata or a node's data."""
    job = {"workflowId": "c-same-depth", "nodeId": "n", "promptSpec": {"basePrompt": "x"}}
    for depth, status in ((MAX_JSON_DEPTH, (202, 200)), (MAX_JSON_DEPTH + 1, (422, 422))):
        started = await stack.api.post("/v1/jobs", json={**job, "metadata": nested(depth)})
        saved = await stack.api.put(f"/v1/canvases/c-same-depth/nodes/d{depth}", json={"data": nested(depth)})
        assert (started.status_code, saved.status_code) == status, (depth, started.text[:200], saved.text[:200])


def test_json_nesting_is_measured_without_parsing_and_ignores_brackets_in_strings() -> None:
    assert not json_nesting_exceeds(b"[" * MAX_BODY_JSON_DEPTH + b"]" * MAX_BODY_JSON_DEPTH)
    assert json_nesting_exceeds(b"[" * (MAX_BODY_JSON_DEPTH + 1))
    assert json_nesting_exceeds(b"[" * 100_000)
    in_strings = json.dumps({"a": "[" * 500, "b": ["{" * 500, '\\"[[[' * 100]}).encode()
    assert not json_nesting_exceeds(in_strings)


async def test_a_body_of_100000_brackets_gets_422_not_500(stack: Stack) -> None:
    for method, path in (("POST", "/v1/jobs"), ("PUT", "/v1/canvases/c-brackets"), ("POST", "/v1/uploads")):
        answer = await stack.api.request(
            method, path, content=b"[" * 100_000, headers={"content-type": "application/json"}
        )
        assert (answer.status_code, answer.json()["code"]) == (422, "json_too_deep"), (path, answer.text[:200])


@pytest.mark.parametrize("bad_id", [".", "..", "a..b", "../x", ""])
@pytest.mark.parametrize("field", ["workflowId", "nodeId"])
async def test_ids_that_make_relative_paths_are_refused(
    field: str, bad_id: str, stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    canvas_id = "c-" + uuid.uuid4().hex[:8]
    body = {"workflowId": canvas_id, "nodeId": "n", "promptSpec": {"basePrompt": "x"}, field: bad_id}
    answer = await stack.api.post("/v1/jobs", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == "invalid_request"
    assert await runs_on(db_sessions, canvas_id) == 0


async def test_a_boolean_is_not_a_count_or_a_seed(stack: Stack) -> None:
    for spec in ({"basePrompt": "x", "n": True}, {"basePrompt": "x", "seed": False}):
        answer = await stack.api.post("/v1/jobs", json={"workflowId": "c", "nodeId": "n", "promptSpec": spec})
        assert answer.status_code == 422, answer.text


async def test_the_provider_filter_is_not_a_pattern(stack: Stack) -> None:
    record = await stack.wait((await stack.start("filter me"))["jobId"])
    canvas = record["workflowId"]
    exact = await stack.api.get("/v1/jobs", params={"provider": "local", "workflowId": canvas})
    wildcard = await stack.api.get("/v1/jobs", params={"provider": "l_cal", "workflowId": canvas})
    percent = await stack.api.get("/v1/jobs", params={"provider": "%", "workflowId": canvas})
    assert [item["jobId"] for item in exact.json()["items"]] == [record["jobId"]]
    assert wildcard.json()["items"] == [] and percent.json()["items"] == []


async def test_an_oversized_body_is_refused_before_it_is_read(stack: Stack) -> None:
    huge = b'{"workflowId": "c", "nodeId": "n", "promptSpec": {"basePrompt": "' + b"x" * 3_000_000 + b'"}}'
    declared = await stack.api.post("/v1/jobs", content=huge, headers={"content-type": "application/json"})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(huge), 64 * 1024):
            yield huge[start : start + 64 * 1024]

    streamed = await stack.api.post("/v1/jobs", content=chunks(), headers={"content-type": "application/json"})
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text[:200]
        assert answer.json()["code"] == "payload_too_large"


async def test_a_missing_key_is_a_401_that_says_how_to_authenticate(
    stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, API_KEYS=["k-1"])
    async with running_stack(settings, temporal_client, workers=False) as stack:
        refused = await stack.api.get("/v1/jobs")
        allowed = await stack.api.get("/v1/jobs", headers={"Authorization": "Bearer k-1"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert refused.json()["code"] == "unauthorized"
    assert allowed.status_code == 200


async def test_a_job_id_cannot_be_computed_from_its_idempotency_key_and_is_scoped_by_tenant(
    stack_settings: Settings, temporal_client: Client
) -> None:
    # A job id derived from the key alone let anyone who could guess a key compute the job's image URL.
    settings = make_settings(stack_settings, API_KEYS=["k-1", "k-2"], ADMIN_API_KEY="admin-key")
    body = {"workflowId": "c-scope", "nodeId": "n-1", "promptSpec": {"basePrompt": "a harbour"}}
    key = "order-42"
    async with running_stack(settings, temporal_client, workers=False) as stack:
        admin = {"Authorization": "Bearer admin-key"}
        tenant = (await stack.api.post("/v1/tenants", json={"name": "other"}, headers=admin)).json()
        other_key = (await stack.api.post(f"/v1/tenants/{tenant['id']}/keys", headers=admin)).json()["key"]
        answers = [
            await stack.api.post(
                "/v1/jobs", json=body, headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": key}
            )
            for api_key in ("k-1", "k-2", other_key)
        ]
    assert [answer.status_code for answer in answers] == [202, 202, 202], [answer.text for answer in answers]
    first, same_tenant, other_tenant = (answer.json()["jobId"] for answer in answers)
    assert first == same_tenant and same_tenant != other_tenant
    assert answers[1].headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in answers[2].headers
    guessable = {hashlib.sha256(key.encode()).hexdigest()[:32], hashlib.sha256(f"k-1{key}".encode()).hexdigest()[:32]}
    assert first.removeprefix("job_") not in guessable


async def test_one_unreadable_row_cannot_break_a_page_of_jobs(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # A row stored before today's limits (metadata 300 deep): its page and its record still answer.
    canvas_id = "c-" + uuid.uuid4().hex[:8]
    fine = await stack.api.post(
        "/v1/jobs", json={"workflowId": canvas_id, "nodeId": "n-1", "promptSpec": {"basePrompt": "x"}}
    )
    request = json.dumps({"promptSpec": {"basePrompt": "x"}, "metadata": nested(300)})
    async with db_sessions.begin() as session:
        await session.execute(
            text(
                "INSERT INTO runs (id, kind, canvas_id, node_id, status, provider, model, processor, request)"
                " VALUES ('job_old_deep', 'image_gen', :canvas, 'n-2', 'completed', 'local', 'procedural',"
                " 'local:procedural',"
                " CAST(:request AS jsonb))"
            ),
            {"canvas": canvas_id, "request": request},
        )
    page = await stack.api.get("/v1/jobs", params={"workflowId": canvas_id})
    record = await stack.api.get("/v1/jobs/job_old_deep")
    assert page.status_code == 200, page.text[:300]
    by_id = {item["jobId"]: item for item in page.json()["items"]}
    assert set(by_id) == {fine.json()["jobId"], "job_old_deep"}
    assert by_id["job_old_deep"]["unreadable"].startswith("the stored record cannot be shown")
    assert by_id["job_old_deep"]["status"] == "completed"
    assert "unreadable" not in by_id[fine.json()["jobId"]]
    assert record.status_code == 200 and record.json()["unreadable"]


async def test_options_names_every_method_of_the_path(stack: Stack) -> None:
    options = await stack.api.options("/v1/jobs")
    wrong = await stack.api.delete("/v1/jobs")
    assert options.status_code == 204
    assert options.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD, OPTIONS, POST"
    assert wrong.json()["code"] == "method_not_allowed" and "GET" in wrong.json()["message"]
    assert (await stack.api.options("/no/such/path")).status_code == 404


async def test_a_refused_cors_preflight_answers_json(stack_settings: Settings, temporal_client: Client) -> None:
    settings = make_settings(stack_settings, CORS_ORIGINS=["http://board.example"])
    preflight = {"Access-Control-Request-Method": "POST"}
    async with running_stack(settings, temporal_client, workers=False) as stack:
        refused = await stack.api.options("/v1/jobs", headers={"Origin": "http://evil.example", **preflight})
        allowed = await stack.api.options("/v1/jobs", headers={"Origin": "http://board.example", **preflight})
    assert refused.status_code == 400
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["code"] == "cors_refused" and "CORS_ORIGINS" in refused.json()["message"]
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://board.example"


async def test_a_canvas_id_the_database_cannot_hold_is_refused_before_the_stream(stack: Stack) -> None:
    for headers in ({}, {"Last-Event-ID": "5"}):
        answer = await stack.api.get("/v1/canvases/%00/events", headers=headers)
        assert answer.status_code == 422, answer.text[:200]
        assert answer.headers["content-type"] == "application/json"


async def test_openapi_documents_401_on_protected_routes_and_400_on_streams(stack: Stack) -> None:
    paths = (await stack.api.get("/openapi.json")).json()["paths"]
    for path, method in [("/v1/jobs", "post"), ("/v1/jobs", "get"), ("/v1/providers", "get"), ("/v1/stats", "get")]:
        assert "401" in paths[path][method]["responses"], (path, method)
    for path in ("/v1/jobs/{jobId}/events", "/v1/canvases/{workflowId}/events"):
        assert {"400", "401"} <= set(paths[path]["get"]["responses"]), path


async def test_a_request_that_would_store_a_base64_looking_blob_is_a_422_and_stores_nothing(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    # Found by schemathesis: a 10,000-character negativePrompt of zeros reads as a base64 blob when stored.
    canvas_id = "c-" + uuid.uuid4().hex[:8]
    spec = {"basePrompt": "x", "negativePrompt": "0" * 10_000, "previousImage": "https://example.com/sketch.png"}
    answer = await stack.api.post("/v1/jobs", json={"workflowId": canvas_id, "nodeId": "n", "promptSpec": spec})
    assert answer.status_code == 422, answer.text[:300]
    assert answer.json()["code"] == "unstorable_request"
    assert await runs_on(db_sessions, canvas_id) == 0
