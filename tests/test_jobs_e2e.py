"""One durable image job, end to end, on real parts: API -> Temporal -> local provider -> storage -> node."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import httpx
import pytest
from PIL import Image
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus

from core.config import Settings
from core.temporal import CANVAS_ID, IMAGE_MODEL, NODE_ID, PROVIDER
from tests.fixtures.stack import Stack, make_settings, running_stack, was_cancelled


async def count_events(sessions: async_sessionmaker[AsyncSession], job_id: str, kind: str) -> int:
    async with sessions() as session:
        result = await session.execute(
            text("SELECT count(*) FROM run_events WHERE run_id = :id AND kind = :kind"), {"id": job_id, "kind": kind}
        )
        return int(result.scalar_one())


async def test_local_job_completes_end_to_end(stack: Stack, db_sessions: async_sessionmaker[AsyncSession]) -> None:
    started = await stack.start("a lighthouse at dusk", promptSpec={"size": "640x360", "seed": 7}, nodeId="n1")
    assert started["status"] == "pending"
    record = await stack.wait(started["jobId"])

    assert record["status"] == "completed", record
    assert record["imageUrl"].startswith(stack.settings.app_url + "/files/images/")
    assert record["imageUrls"] == [record["imageUrl"]]
    assert record["seed"] == 7
    assert set(record["timings"]) >= {"queued", "generation", "nodeUpdate", "total"}
    async with httpx.AsyncClient() as http:
        image = await http.get(record["imageUrl"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (640, 360)

    async with httpx.AsyncClient() as http:
        thumbnail = await http.get(record["thumbnailUrl"])
    assert thumbnail.headers["content-type"] == "image/webp"
    small = Image.open(io.BytesIO(thumbnail.content))
    assert (small.format, max(small.size)) == ("WEBP", 256)

    node = await stack.node(started["workflowId"], "n1")
    assert node["data"]["thumbnailUrl"] == record["thumbnailUrl"]
    assert node["data"]["status"] == "completed"
    assert node["data"]["imageUrl"] == record["imageUrl"]
    assert node["data"]["jobId"] == record["jobId"]
    assert await count_events(db_sessions, record["jobId"], "completed") == 1

    description = await stack.client.get_workflow_handle(record["jobId"]).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    attributes = description.typed_search_attributes
    assert attributes[CANVAS_ID] == started["workflowId"]
    assert attributes[NODE_ID] == "n1"
    assert attributes[PROVIDER] == "local"
    assert attributes[IMAGE_MODEL] == "procedural"
    assert "local:procedural · node n1 · a lighthouse at dusk" == await description.static_summary()


async def test_same_seed_gives_the_same_image(stack: Stack) -> None:
    first = await stack.start("twin peaks", promptSpec={"size": "128x128", "seed": 3})
    second = await stack.start("twin peaks", promptSpec={"size": "128x128", "seed": 3})
    images = []
    async with httpx.AsyncClient() as http:
        for started in (first, second):
            record = await stack.wait(started["jobId"])
            images.append((await http.get(record["imageUrl"])).content)
    assert images[0] == images[1]


async def test_idempotency_key_starts_one_workflow(stack: Stack) -> None:
    key = f"key-{uuid.uuid4()}"
    body = {"workflowId": "canvas-idem", "nodeId": "n1", "promptSpec": {"basePrompt": "one only"}}
    answers = [await stack.api.post("/v1/jobs", json=body, headers={"Idempotency-Key": key}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [202, 202, 202]
    job_ids = {answer.json()["jobId"] for answer in answers}
    assert len(job_ids) == 1
    (job_id,) = job_ids
    await stack.wait(job_id)
    executions = [execution async for execution in stack.client.list_workflows(f"WorkflowId = '{job_id}'")]
    assert len(executions) == 1

    different = await stack.api.post(
        "/v1/jobs", json={**body, "promptSpec": {"basePrompt": "another"}}, headers={"Idempotency-Key": key}
    )
    assert different.status_code == 409
    assert different.json()["code"] == "idempotency_key_reused"


async def test_cancel_running_job(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    slow = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=20_000)
    async with running_stack(slow, temporal_client) as stack:
        started = await stack.start("never finished", nodeId="n-cancel")
        await stack.wait(started["jobId"], statuses=("running",))
        cancel = await stack.api.post(f"/v1/jobs/{started['jobId']}/cancel")
        assert cancel.status_code == 202, cancel.text
        record = await stack.wait(started["jobId"])
        assert was_cancelled(record)
        handle = stack.client.get_workflow_handle(started["jobId"])
        for _ in range(50):
            if (await handle.describe()).status == WorkflowExecutionStatus.CANCELED:
                break
            await asyncio.sleep(0.1)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        node = await stack.node(started["workflowId"], "n-cancel")
        assert "status" not in node["data"] and "jobId" not in node["data"]  # as before the job: it had none
        assert await count_events(db_sessions, started["jobId"], "cancelled") == 1

        again = await stack.api.post(f"/v1/jobs/{started['jobId']}/cancel")
        assert again.status_code == 409
        assert again.json()["code"] == "job_finished"


async def test_cancelling_a_job_whose_workflow_was_terminated_from_outside_ends_it(
    stack_settings: Settings, temporal_client: Client, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    slow = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=20_000)
    async with running_stack(slow, temporal_client) as stack:
        started = await stack.start("terminated by an operator", nodeId="n-gone")
        await stack.wait(started["jobId"], statuses=("running",))
        await stack.client.get_workflow_handle(started["jobId"]).terminate(reason="an operator stopped it")
        assert (await stack.job(started["jobId"]))["status"] == "running"  # nothing of the workflow's ended it

        cancel = await stack.api.post(f"/v1/jobs/{started['jobId']}/cancel")

        assert cancel.status_code == 202, cancel.text
        assert was_cancelled(cancel.json()), json.dumps(cancel.json())
        assert was_cancelled(await stack.job(started["jobId"]))
        node = await stack.node(started["workflowId"], "n-gone")
        assert "status" not in node["data"] and "jobId" not in node["data"]  # as a cancellation leaves it
        assert await count_events(db_sessions, started["jobId"], "cancelled") == 1
        again = await stack.api.post(f"/v1/jobs/{started['jobId']}/cancel")
        assert again.status_code == 409
        assert again.json()["code"] == "job_finished"


async def test_bad_input_answers_clearly_and_stores_nothing(
    stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    async with db_sessions() as session:
        before = (await session.execute(text("SELECT count(*) FROM runs"))).scalar_one()

    malformed = await stack.api.post("/v1/jobs", json={"workflowId": "c", "promptSpec": {"basePrompt": ""}})
    assert malformed.status_code == 422
    body = malformed.json()
    assert body["code"] == "invalid_request"
    fields = {item["field"] for item in body["details"]}
    assert {"nodeId", "promptSpec.basePrompt"} <= fields

    not_json = await stack.api.post("/v1/jobs", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    assert not_json.json()["code"] == "invalid_request"

    unknown = await stack.api.post(
        "/v1/jobs", json={"workflowId": "c", "nodeId": "n", "provider": "dalle9", "promptSpec": {"basePrompt": "x"}}
    )
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "unknown_provider"
    assert "local" in unknown.json()["message"]

    huge = await stack.api.post(
        "/v1/jobs", json={"workflowId": "c", "nodeId": "n", "promptSpec": {"basePrompt": "x" * 40_000}}
    )
    assert huge.status_code == 422
    assert "limit" in huge.json()["message"]

    inline_image = await stack.api.post(
        "/v1/jobs",
        json={
            "workflowId": "c",
            "nodeId": "n",
            "promptSpec": {"basePrompt": "x"},
            "metadata": {"ref": "data:image/png;base64,AAAA"},
        },
    )
    assert inline_image.status_code == 422

    missing = await stack.api.get("/v1/jobs/job_does_not_exist")
    assert missing.status_code == 404
    assert missing.json()["code"] == "job_not_found"

    async with db_sessions() as session:
        after = (await session.execute(text("SELECT count(*) FROM runs"))).scalar_one()
    assert after == before


async def test_list_jobs_filters_and_paginates(stack: Stack) -> None:
    canvas = "canvas-list-" + uuid.uuid4().hex[:6]
    started = [await stack.start(f"picture {i}", workflowId=canvas, nodeId=f"n{i}") for i in range(3)]
    for record in started:
        await stack.wait(record["jobId"])
    first = (await stack.api.get("/v1/jobs", params={"workflowId": canvas, "limit": 2})).json()
    assert len(first["items"]) == 2
    second = (
        await stack.api.get("/v1/jobs", params={"workflowId": canvas, "limit": 2, "cursor": first["nextCursor"]})
    ).json()
    assert "nextCursor" not in second
    seen = [item["jobId"] for item in first["items"] + second["items"]]
    assert sorted(seen) == sorted(record["jobId"] for record in started)
    assert seen == [record["jobId"] for record in reversed(started)]
    by_node = (await stack.api.get("/v1/jobs", params={"workflowId": canvas, "nodeId": "n1"})).json()
    assert [item["nodeId"] for item in by_node["items"]] == ["n1"]
    assert (await stack.api.get("/v1/jobs", params={"status": "bogus"})).status_code == 422
    assert (await stack.api.get("/v1/jobs", params={"cursor": "garbage"})).status_code == 400


async def test_database_refuses_image_data(db_sessions: async_sessionmaker[AsyncSession]) -> None:
    for payload in ({"imageUrl": "data:image/png;base64,iVBORw0KGgo="}, {"blob": "QUJD" * 400}):
        async with db_sessions() as session:
            with pytest.raises(IntegrityError):
                await session.execute(
                    text(
                        "INSERT INTO runs (id, canvas_id, node_id, provider, model, processor, request, payload)"
                        " VALUES (:id, 'c', 'n', 'local', 'procedural', 'local:procedural', '{}',"
                        "   CAST(:payload AS jsonb))"
                    ),
                    {"id": "job_" + uuid.uuid4().hex, "payload": json.dumps(payload)},
                )
            await session.rollback()
