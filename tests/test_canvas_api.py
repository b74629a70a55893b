"""Canvas nodes, regenerate/supersede, retry, stats and API keys, through the HTTP API."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from core.db import transaction
from models.payloads import ImageJobInput, NodeUpdate, PromptSpec, RunTransition
from models.vocabulary import JobStatus
from store import canvas_nodes, runs
from tests.fixtures.stack import Stack, make_settings, running_stack, was_cancelled


async def test_put_node_keeps_job_owned_fields(stack: Stack) -> None:
    canvas = "canvas-" + uuid.uuid4().hex[:8]
    created = await stack.api.put(
        f"/v1/canvases/{canvas}/nodes/hero",
        json={"type": "imageNode", "position": {"x": 10, "y": 20}, "data": {"label": "Hero"}},
    )
    assert created.status_code == 200, created.text
    assert created.json() == {
        "id": "hero",
        "type": "imageNode",
        "position": {"x": 10, "y": 20},
        "data": {"label": "Hero"},
    }

    record = await stack.wait((await stack.start("hero shot", workflowId=canvas, nodeId="hero"))["jobId"])
    moved = await stack.api.put(
        f"/v1/canvases/{canvas}/nodes/hero",
        json={"position": {"x": 99, "y": 1}, "data": {"label": "Renamed", "imageUrl": "https://evil.example/x.png"}},
    )
    assert moved.status_code == 200
    node = moved.json()
    assert node["type"] == "imageNode"
    assert node["position"] == {"x": 99, "y": 1}
    assert node["data"]["label"] == "Renamed"
    assert node["data"]["imageUrl"] == record["imageUrl"]
    assert node["data"]["status"] == "completed"
    assert (await stack.node(canvas, "hero"))["data"] == node["data"]

    bad = await stack.api.put(f"/v1/canvases/{canvas}/nodes/hero", json={"data": {"src": "data:image/png;base64,AAAA"}})
    assert bad.status_code == 422
    assert bad.json()["code"] == "invalid_request"


async def test_regenerate_supersedes_the_running_job(stack_settings: Settings, temporal_client: Client) -> None:
    async with running_stack(make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=3000), temporal_client) as stack:
        canvas = "canvas-" + uuid.uuid4().hex[:8]
        first = await stack.start("first take", workflowId=canvas, nodeId="n")
        await stack.wait(first["jobId"], statuses=("running",))
        second = await stack.start("second take", workflowId=canvas, nodeId="n")
        assert was_cancelled(await stack.wait(first["jobId"]))
        finished = await stack.wait(second["jobId"])
        assert finished["status"] == "completed"
        node = await stack.node(canvas, "n")
        assert node["data"]["jobId"] == second["jobId"]
        assert node["data"]["imageUrl"] == finished["imageUrl"]
        assert node["data"]["status"] == "completed"


def job_input(canvas: str, job_id: str) -> ImageJobInput:
    return ImageJobInput(
        job_id=job_id, canvas_id=canvas, node_id="n", provider="local", model="procedural", spec=PromptSpec(prompt="p")
    )


async def test_an_older_job_never_overwrites_a_newer_one(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    for newer_finishes_first in (True, False):
        canvas = "canvas-" + uuid.uuid4().hex[:8]
        older, newer = job_input(canvas, "job_old_" + canvas), job_input(canvas, "job_new_" + canvas)
        for job in (older, newer):
            async with transaction(db_sessions) as session:
                await runs.record_run(session, job=job)
        writes = [(older, "old.png"), (newer, "new.png")]
        if newer_finishes_first:
            writes.reverse()
        outcomes = {}
        for job, url in writes:
            async with transaction(db_sessions) as session:
                update = NodeUpdate(canvas, "n", job.job_id, "completed", image_url=f"https://cdn.test/{url}")
                outcomes[job.job_id] = await canvas_nodes.update_node(session, update=update)
        assert outcomes == {older.job_id: False, newer.job_id: True}
        async with db_sessions() as session:
            (node,) = await canvas_nodes.list_nodes(session, canvas_id=canvas)
        assert node.node_data["imageUrl"] == "https://cdn.test/new.png"
        assert node.owner_job_id == newer.job_id


async def test_a_job_end_on_its_node_is_final(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    canvas = "canvas-" + uuid.uuid4().hex[:8]
    job = job_input(canvas, "job_end_" + canvas)
    async with transaction(db_sessions) as session:
        await runs.record_run(session, job=job)
    late = [
        NodeUpdate(canvas, "n", job.job_id, "running", progress=40.0),
        NodeUpdate(canvas, "n", job.job_id, "completed", image_url="https://cdn.test/late.png"),
    ]
    outcomes = []
    for update in [NodeUpdate(canvas, "n", job.job_id, "failed", error="The provider refused."), *late]:
        async with transaction(db_sessions) as session:
            outcomes.append(await canvas_nodes.update_node(session, update=update))
    assert outcomes == [True, False, False]
    async with db_sessions() as session:
        (node,) = await canvas_nodes.list_nodes(session, canvas_id=canvas)
    assert (node.node_data["status"], node.node_data["error"]) == ("error", "The provider refused.")  # the spec's word
    assert node.node_data["progress"] == 0 and "imageUrl" not in node.node_data  # as the claim left it


async def test_a_cancelled_job_gives_its_node_back_as_it_was(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    canvas = "canvas-" + uuid.uuid4().hex[:8]
    made, regenerate, fresh = (job_input(canvas, f"job_{name}_{canvas}") for name in ("made", "regen", "fresh"))
    fresh.node_id = "never-had-one"
    async with transaction(db_sessions) as session:
        await runs.record_run(session, job=made)
        await canvas_nodes.update_node(
            session, update=NodeUpdate(canvas, "n", made.job_id, "completed", image_url="https://cdn.test/a.png")
        )
        await runs.transition(session, change=RunTransition(job_id=made.job_id, status=JobStatus.COMPLETED))
        await runs.record_run(session, job=regenerate)
        await runs.record_run(session, job=fresh)
    async with db_sessions() as session:
        claimed = {node.id: dict(node.node_data) for node in await canvas_nodes.list_nodes(session, canvas_id=canvas)}
    assert claimed["n"]["jobId"] == regenerate.job_id and claimed["n"]["status"] == "pending"
    assert all(value is not None for data in claimed.values() for value in data.values()), claimed
    for job in (regenerate, fresh):
        async with transaction(db_sessions) as session:
            assert await canvas_nodes.update_node(
                session, update=NodeUpdate(canvas, job.node_id, job.job_id, "cancelled")
            )
            late = NodeUpdate(canvas, job.node_id, job.job_id, "running", progress=50.0)
            assert not await canvas_nodes.update_node(session, update=late)  # no longer the job's node
    async with db_sessions() as session:
        nodes = {node.id: node.node_data for node in await canvas_nodes.list_nodes(session, canvas_id=canvas)}
    assert nodes["n"]["jobId"] == made.job_id and nodes["n"]["status"] == "completed"
    assert nodes["n"]["imageUrl"] == "https://cdn.test/a.png" and nodes["n"]["progress"] == 100
    assert not {"jobId", "status", "progress", "error"} & set(nodes["never-had-one"]), nodes["never-had-one"]


async def test_retry_a_cancelled_job_and_stats(stack_settings: Settings, temporal_client: Client) -> None:
    async with running_stack(make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=2000), temporal_client) as stack:
        canvas = "canvas-" + uuid.uuid4().hex[:8]
        started = await stack.start("try again", workflowId=canvas, nodeId="n")
        refused = await stack.api.post(f"/v1/jobs/{started['jobId']}/retry")
        assert refused.status_code == 409
        assert refused.json()["code"] == "job_not_retryable"
        await stack.api.post(f"/v1/jobs/{started['jobId']}/cancel")
        assert was_cancelled(await stack.wait(started["jobId"]))
        # Meanwhile another take runs for the node: the retry is the newest request, so it supersedes that one.
        other = await stack.start("another take", workflowId=canvas, nodeId="n")
        await stack.wait(other["jobId"], statuses=("running",))
        retried = await stack.api.post(f"/v1/jobs/{started['jobId']}/retry")
        assert retried.status_code == 202
        again = retried.json()
        assert again["jobId"] != started["jobId"]
        assert again["promptSpec"] == started["promptSpec"]
        assert again["metadata"]["retryOf"] == started["jobId"]
        assert again["status"] == "pending"
        assert was_cancelled(await stack.wait(other["jobId"]))
        assert (await stack.wait(again["jobId"]))["status"] == "completed"
        assert (await stack.node(canvas, "n"))["data"]["jobId"] == again["jobId"]
        stats = (await stack.api.get("/v1/stats", params={"workflowId": canvas})).json()
        assert stats["byStatus"]["cancelled"] == 2
        assert stats["byStatus"]["completed"] == 1
        assert stats["total"] == 3


async def test_api_keys_protect_job_routes(stack_settings: Settings, temporal_client: Client) -> None:
    settings = make_settings(stack_settings, API_KEYS=["k-one", "k-two"])
    async with running_stack(settings, temporal_client, workers=False) as stack:
        for method, path in (
            ("GET", "/v1/jobs"),
            ("POST", "/v1/jobs"),
            ("GET", "/v1/canvases/c/nodes"),
            ("GET", "/v1/stats"),
        ):
            answer = await stack.api.request(method, path)
            assert answer.status_code == 401, path
            assert answer.json()["code"] == "unauthorized"
        wrong = await stack.api.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await stack.api.get("/v1/jobs", headers={"Authorization": "Bearer k-two"})
        assert right.status_code == 200
        assert (await stack.api.get("/healthz")).status_code == 200
