"""Tenants with ADMIN_API_KEY set: made through the admin API, isolated from each other on every route, held to
their start limit, and reached from browsers through canvas tokens."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image
from temporalio.client import Client, WorkflowHistory

from cli.main import main
from core.config import Settings
from tests.fixtures.stack import Stack, make_settings, running_stack
from tests.helpers import eventually
from tests.sse import read_events

ADMIN = "admin-" + uuid.uuid4().hex


@dataclass
class Tenant:
    id: str
    key_id: str
    api: httpx.AsyncClient


@pytest.fixture
async def tenant_stack(stack_settings: Settings, temporal_client: Client) -> AsyncIterator[Stack]:
    settings = make_settings(stack_settings, ADMIN_API_KEY=ADMIN)
    async with running_stack(settings, temporal_client, workers=False) as stack:
        stack.api.headers["Authorization"] = f"Bearer {ADMIN}"
        yield stack


@pytest.fixture
async def tenants(tenant_stack: Stack) -> AsyncIterator[tuple[Tenant, Tenant]]:
    made = [await new_tenant(tenant_stack, name) for name in ("Acme", "Globex")]
    try:
        yield made[0], made[1]
    finally:
        for tenant in made:
            await tenant.api.aclose()


async def new_tenant(stack: Stack, name: str) -> Tenant:
    created = await stack.api.post("/v1/tenants", json={"name": name})
    assert created.status_code == 201, created.text
    tenant_id = created.json()["id"]
    key = await stack.api.post(f"/v1/tenants/{tenant_id}/keys", json={"name": "backend"})
    assert key.status_code == 201, key.text
    body = key.json()
    assert body["key"].startswith(body["prefix"]) and len(body["key"]) > 40
    headers = {"Authorization": f"Bearer {body['key']}"}
    return Tenant(tenant_id, body["id"], httpx.AsyncClient(base_url=stack.base_url, headers=headers, timeout=10))


def job_body(canvas_id: str, node_id: str = "n1") -> dict[str, Any]:
    return {"workflowId": canvas_id, "nodeId": node_id, "provider": "local", "promptSpec": {"basePrompt": "a fox"}}


async def test_without_a_key_every_route_is_refused_and_keys_are_made_by_the_admin(
    tenant_stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    acme, _ = tenants
    async with httpx.AsyncClient(base_url=tenant_stack.base_url, timeout=10) as anonymous:
        for method, path in [("GET", "/v1/jobs"), ("GET", "/v1/canvases"), ("POST", "/v1/tenants")]:
            answer = await anonymous.request(method, path)
            assert answer.status_code == 401, (method, path, answer.text)
    by_tenant = await acme.api.get("/v1/tenants")
    assert (by_tenant.status_code, by_tenant.json()["code"]) == (403, "admin_only")
    by_admin = await tenant_stack.api.get("/v1/jobs")
    assert (by_admin.status_code, by_admin.json()["code"]) == (403, "admin_key_not_a_tenant")
    keys = (await tenant_stack.api.get(f"/v1/tenants/{acme.id}/keys")).json()["items"]
    assert [key["id"] for key in keys] == [acme.key_id] and "key" not in keys[0], "a stored key was shown again"


async def test_a_tenant_finds_nothing_of_another(tenant_stack: Stack, tenants: tuple[Tenant, Tenant]) -> None:
    acme, globex = tenants
    canvas_id = "canvas-" + uuid.uuid4().hex[:8]
    board = {
        "name": "Acme's board",
        "nodes": [{"id": "n1", "type": "image", "position": {"x": 0, "y": 0}}],
        "edges": [],
    }
    assert (await acme.api.put(f"/v1/canvases/{canvas_id}", json=board)).status_code == 200
    started = await acme.api.post("/v1/jobs", json=job_body(canvas_id))
    assert started.status_code == 202, started.text
    job_id = started.json()["jobId"]
    assert started.json()["workflowId"] == canvas_id, "the canvas key leaked into the record"

    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/status"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("POST", f"/v1/jobs/{job_id}/retry"),
        ("GET", f"/v1/canvases/{canvas_id}"),
    ]:
        answer = await globex.api.request(method, path)
        assert answer.status_code == 404, (method, path, answer.text)
    assert (await globex.api.get("/v1/jobs")).json()["items"] == []
    assert (await globex.api.get("/v1/jobs", params={"workflowId": canvas_id})).json()["items"] == []
    assert (await globex.api.get("/v1/canvases")).json()["items"] == []
    assert (await globex.api.get("/v1/stats")).json()["total"] == 0

    own = {"name": "Globex's board", "nodes": [], "edges": []}
    saved = await globex.api.put(f"/v1/canvases/{canvas_id}", json=own)
    assert saved.status_code == 200 and saved.json()["id"] == canvas_id
    acme_board = (await acme.api.get(f"/v1/canvases/{canvas_id}")).json()
    assert (acme_board["name"], [node["id"] for node in acme_board["nodes"]]) == ("Acme's board", ["n1"])
    assert [item["jobId"] for item in (await acme.api.get("/v1/jobs")).json()["items"]] == [job_id]


async def test_a_revoked_key_and_its_tokens_are_refused_at_once(
    tenant_stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    acme, _ = tenants
    minted = await acme.api.post("/v1/canvas-tokens", json={"workflowId": "c-1", "access": "read"})
    token = minted.json()["token"]
    assert (await acme.api.get("/v1/jobs")).status_code == 200
    revoked = await tenant_stack.api.delete(f"/v1/tenants/{acme.id}/keys/{acme.key_id}")
    assert revoked.status_code == 204
    assert (await acme.api.get("/v1/jobs")).status_code == 401
    with_token = await acme.api.get("/v1/canvases/c-1/nodes", headers={"Authorization": f"Bearer {token}"})
    assert (with_token.status_code, with_token.json()["code"]) == (401, "invalid_canvas_token")


async def token(tenant: Tenant, canvas_id: str, access: str, ttl: int = 600) -> dict[str, str]:
    minted = await tenant.api.post(
        "/v1/canvas-tokens", json={"workflowId": canvas_id, "access": access, "ttlSeconds": ttl}
    )
    assert minted.status_code == 201, minted.text
    return {"Authorization": f"Bearer {minted.json()['token']}"}


async def test_canvas_tokens_keep_to_their_canvas_and_access(
    tenant_stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    acme, _ = tenants
    canvas_id, other_id = "canvas-" + uuid.uuid4().hex[:8], "canvas-" + uuid.uuid4().hex[:8]
    job_id = (await acme.api.post("/v1/jobs", json=job_body(canvas_id))).json()["jobId"]
    other_job = (await acme.api.post("/v1/jobs", json=job_body(other_id))).json()["jobId"]
    read, write = await token(acme, canvas_id, "read"), await token(acme, canvas_id, "write")
    browser = httpx.AsyncClient(base_url=tenant_stack.base_url, timeout=10)
    async with browser:
        assert (await browser.get(f"/v1/canvases/{canvas_id}", headers=read)).status_code == 200
        assert (await browser.get(f"/v1/jobs/{job_id}", headers=read)).status_code == 200
        assert (await browser.get(f"/v1/jobs/{other_job}", headers=read)).status_code == 404
        listed = (await browser.get("/v1/jobs", headers=read)).json()["items"]
        assert [item["jobId"] for item in listed] == [job_id], "a token listed jobs of another canvas"
        refused = await browser.post("/v1/jobs", headers=read, json=job_body(canvas_id, "n2"))
        assert (refused.status_code, refused.json()["code"]) == (403, "read_only_token")

        started = await browser.post("/v1/jobs", headers=write, json=job_body(canvas_id, "n2"))
        assert started.status_code == 202, started.text
        elsewhere = await browser.post("/v1/jobs", headers=write, json=job_body(other_id, "n2"))
        assert (elsewhere.status_code, elsewhere.json()["code"]) == (403, "wrong_canvas")

        stream_token = read["Authorization"].removeprefix("Bearer ")
        async with browser.stream("GET", f"/v1/canvases/{canvas_id}/events", params={"token": stream_token}) as opened:
            assert opened.status_code == 200
            first = await anext(read_events(opened))  # the canvas' nodes as they are: those its jobs made
            assert first.event == "node" and first.json()["id"] in {"n1", "n2"}

        short = await token(acme, canvas_id, "read", ttl=1)
        assert (await browser.get(f"/v1/canvases/{canvas_id}/nodes", headers=short)).status_code == 200
        await asyncio.sleep(2.1)
        expired = await browser.get(f"/v1/canvases/{canvas_id}/nodes", headers=short)
        assert (expired.status_code, expired.json()["code"]) == (401, "invalid_canvas_token")
        forged = {"Authorization": read["Authorization"][:-3] + "AAA"}
        assert (await browser.get(f"/v1/canvases/{canvas_id}", headers=forged)).status_code == 401


async def test_starts_per_minute_lets_that_many_through_and_answers_429_after(
    tenant_stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    acme, globex = tenants
    limited = await tenant_stack.api.patch(f"/v1/tenants/{acme.id}", json={"startsPerMinute": 3})
    assert limited.status_code == 200 and limited.json()["startsPerMinute"] == 3
    canvas_id = "canvas-" + uuid.uuid4().hex[:8]
    answers = [await acme.api.post("/v1/jobs", json=job_body(canvas_id, f"n{i}")) for i in range(5)]
    assert [answer.status_code for answer in answers] == [202, 202, 202, 429, 429]
    refused = answers[3]
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (await globex.api.post("/v1/jobs", json=job_body(canvas_id))).status_code == 202, "a limit spilled over"
    assert len((await acme.api.get("/v1/jobs")).json()["items"]) == 3, "a refused start left a job"


async def test_the_cli_makes_tenants_and_keys_and_revokes_them(
    tenant_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async def imagejobs(*argv: str) -> dict[str, Any]:
        code = await asyncio.to_thread(main, [*argv, "--api", tenant_stack.base_url, "--admin-key", ADMIN])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        answer: dict[str, Any] = json.loads(printed.out)
        return answer

    tenant = await imagejobs("tenants", "create", "Initech")
    limited = await imagejobs("tenants", "set", tenant["id"], "--starts-per-minute", "5")
    assert limited["startsPerMinute"] == 5
    made = await imagejobs("keys", "create", tenant["id"], "--name", "cli")
    key = {"Authorization": f"Bearer {made['key']}"}
    assert (await tenant_stack.api.get("/v1/jobs", headers=key)).status_code == 200
    listed = await imagejobs("keys", "list", tenant["id"])
    assert [item["id"] for item in listed["items"]] == [made["id"]]
    await imagejobs("keys", "revoke", tenant["id"], made["id"])
    assert (await tenant_stack.api.get("/v1/jobs", headers=key)).status_code == 401
    refused = await asyncio.to_thread(main, ["tenants", "list", "--api", tenant_stack.base_url, "--admin-key", "wrong"])
    assert refused != 0 and "unauthorized" in capsys.readouterr().err


@asynccontextmanager
async def acme_capped_at_one(
    stack_settings: Settings, temporal_client: Client, *, provider_ms: int, **settings_too: Any
) -> AsyncIterator[tuple[Stack, Tenant]]:
    """A stack whose local provider takes `provider_ms` (and with `settings_too`), and its tenant Acme with
    maxConcurrentJobs 1."""
    settings = make_settings(stack_settings, ADMIN_API_KEY=ADMIN, LOCAL_PROVIDER_DELAY_MS=provider_ms, **settings_too)
    async with running_stack(settings, temporal_client) as stack:
        stack.api.headers["Authorization"] = f"Bearer {ADMIN}"
        acme = await new_tenant(stack, "Acme")
        async with acme.api:
            assert (await stack.api.patch(f"/v1/tenants/{acme.id}", json={"maxConcurrentJobs": 1})).status_code == 200
            yield stack, acme


async def test_jobs_past_max_concurrent_jobs_wait_pending_and_all_run(
    stack_settings: Settings, temporal_client: Client
) -> None:
    async with acme_capped_at_one(stack_settings, temporal_client, provider_ms=700) as (stack, acme):
        globex = await new_tenant(stack, "Globex")
        async with globex.api:
            canvas_id = "canvas-" + uuid.uuid4().hex[:8]
            for node in ("n1", "n2", "n3"):
                assert (await acme.api.post("/v1/jobs", json=job_body(canvas_id, node))).status_code == 202
            other = (await globex.api.post("/v1/jobs", json=job_body(canvas_id))).json()["jobId"]

            most_running, globex_ran = 0, False
            while True:
                statuses = [item["status"] for item in (await acme.api.get("/v1/jobs")).json()["items"]]
                most_running = max(most_running, statuses.count("running"))
                globex_ran |= (await globex.api.get(f"/v1/jobs/{other}")).json()["status"] != "pending"
                if statuses.count("completed") == 3:
                    break
                assert "failed" not in statuses, statuses
                await asyncio.sleep(0.05)
    assert most_running == 1, f"{most_running} of Acme's jobs ran at once under maxConcurrentJobs 1"
    assert globex_ran, "another tenant's job waited on Acme's cap"


async def until_status(tenant: Tenant, job_id: str, wanted: str) -> None:
    for _ in range(400):
        if (await tenant.api.get(f"/v1/jobs/{job_id}")).json()["status"] == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never became {wanted}")


def events_named(history: WorkflowHistory, kind: str) -> list[Any]:
    return [event for event in history.events if event.HasField(f"{kind}_event_attributes")]


async def histories_of(stack: Stack, job_ids: list[str]) -> list[WorkflowHistory]:
    return [await stack.client.get_workflow_handle(job_id).fetch_history() for job_id in job_ids]


async def first_job_running(acme: Tenant, canvas_id: str) -> str:
    first: str = (await acme.api.post("/v1/jobs", json=job_body(canvas_id, "n1"))).json()["jobId"]
    await until_status(acme, first, "running")
    return first


def assert_woken_before_any_recheck(history: WorkflowHistory) -> None:
    signals = events_named(history, "workflow_execution_signaled")
    woken = [
        event
        for event in signals
        if event.workflow_execution_signaled_event_attributes.signal_name == "running_slot_freed"
    ]
    rechecked = events_named(history, "timer_fired")
    assert len(woken) == 1 and not rechecked, (len(woken), len(rechecked))


async def test_a_job_waiting_at_its_tenants_cap_is_woken_by_an_end_in_the_order_it_came(
    stack_settings: Settings, temporal_client: Client
) -> None:
    async with acme_capped_at_one(stack_settings, temporal_client, provider_ms=500) as (stack, acme):
        canvas_id = "canvas-" + uuid.uuid4().hex[:8]
        await first_job_running(acme, canvas_id)
        waiting = []
        for node in ("n2", "n3"):
            waiting.append((await acme.api.post("/v1/jobs", json=job_body(canvas_id, node))).json()["jobId"])
            await asyncio.sleep(0.2)  # n3 comes to the line after n2
        for job_id in waiting:
            await until_status(acme, job_id, "completed")
        ended = [(await acme.api.get(f"/v1/jobs/{job_id}")).json()["finishedAt"] for job_id in waiting]
        histories = await histories_of(stack, waiting)
    assert ended[0] < ended[1], "the job that came to the line first ran first"
    for history in histories:
        assert_woken_before_any_recheck(history)


async def test_a_job_in_its_tenants_line_says_so_on_its_record_and_node_until_it_runs(
    stack_settings: Settings, temporal_client: Client
) -> None:
    async with acme_capped_at_one(stack_settings, temporal_client, provider_ms=3000) as (stack, acme):
        canvas_id = "canvas-" + uuid.uuid4().hex[:8]
        first = await first_job_running(acme, canvas_id)
        second = (await acme.api.post("/v1/jobs", json=job_body(canvas_id, "n2"))).json()["jobId"]

        async def node_data(node_id: str) -> dict[str, Any]:
            nodes = (await acme.api.get(f"/v1/canvases/{canvas_id}/nodes")).json()["items"]
            data: dict[str, Any] = next(node for node in nodes if node["id"] == node_id)["data"]
            return data

        async def in_line() -> dict[str, Any] | None:
            record: dict[str, Any] = (await acme.api.get(f"/v1/jobs/{second}")).json()
            return record if record["waitingForSlot"] else None

        waiting = await eventually(in_line, what="the second job to wait in line")
        waiting_node = await node_data("n2")
        running_first = (await acme.api.get(f"/v1/jobs/{first}")).json()
        await until_status(acme, second, "running")
        running = (await acme.api.get(f"/v1/jobs/{second}")).json()
        running_node = await node_data("n2")
        await until_status(acme, second, "completed")
        completed_node = await node_data("n2")

    assert waiting["status"] == "pending"
    assert (waiting_node["status"], waiting_node.get("waitingForSlot")) == ("pending", True), waiting_node
    assert running_first["waitingForSlot"] is False, "a running job is not in line"
    assert running["waitingForSlot"] is False
    assert running_node["status"] == "running" and "waitingForSlot" not in running_node, running_node
    assert completed_node["status"] == "completed" and "waitingForSlot" not in completed_node, completed_node


async def test_raising_a_tenants_cap_starts_the_jobs_waiting_in_line_at_once(
    stack_settings: Settings, temporal_client: Client
) -> None:
    async with acme_capped_at_one(stack_settings, temporal_client, provider_ms=4000) as (stack, acme):
        canvas_id = "canvas-" + uuid.uuid4().hex[:8]
        first = await first_job_running(acme, canvas_id)
        waiting = [(await acme.api.post("/v1/jobs", json=job_body(canvas_id, n))).json()["jobId"] for n in ("n2", "n3")]

        async def in_line() -> bool:  # each waits on its recheck's timer
            return all(events_named(history, "timer_started") for history in await histories_of(stack, waiting))

        await eventually(in_line, what="both jobs to wait in line")
        waiting_before = (await acme.api.get("/v1/stats")).json()["waitingForSlot"]
        assert (await stack.api.patch(f"/v1/tenants/{acme.id}", json={"maxConcurrentJobs": 3})).status_code == 200
        for job_id in waiting:
            await until_status(acme, job_id, "running")
        assert (await acme.api.get(f"/v1/jobs/{first}")).json()["status"] == "running"
        waiting_after = (await acme.api.get("/v1/stats")).json()["waitingForSlot"]
        histories = await histories_of(stack, waiting)
    for history in histories:
        assert_woken_before_any_recheck(history)
    assert (waiting_before, waiting_after) == (2, 0), "GET /v1/stats counts the tenant's jobs in line"


async def test_a_running_job_terminated_from_outside_is_ended_and_the_next_in_line_runs(
    stack_settings: Settings, temporal_client: Client
) -> None:
    # The sweep asks about each unfinished job's workflow every second here (every ten minutes by default).
    quick = {"WORKFLOW_CHECK_SECONDS": 1.0, "SWEEP_INTERVAL_SECONDS": 0.5}
    async with acme_capped_at_one(stack_settings, temporal_client, provider_ms=30_000, **quick) as (stack, acme):
        globex = await new_tenant(stack, "Globex")
        async with globex.api:
            canvas_id = "canvas-" + uuid.uuid4().hex[:8]
            first = await first_job_running(acme, canvas_id)
            second = (await acme.api.post("/v1/jobs", json=job_body(canvas_id, "n2"))).json()["jobId"]
            healthy = (await globex.api.post("/v1/jobs", json=job_body(canvas_id))).json()["jobId"]
            await until_status(globex, healthy, "running")

            await stack.client.get_workflow_handle(first).terminate(reason="an operator stopped it")
            await until_status(acme, first, "failed")
            ended = (await acme.api.get(f"/v1/jobs/{first}")).json()
            nodes = (await acme.api.get(f"/v1/canvases/{canvas_id}/nodes")).json()["items"]
            node = next(node for node in nodes if node["id"] == "n1")
            await until_status(acme, second, "running")
            still = (await globex.api.get(f"/v1/jobs/{healthy}")).json()["status"]
            (history,) = await histories_of(stack, [second])
            for tenant, job_id in ((acme, second), (globex, healthy)):  # nothing needs them to run their 30 s
                assert (await tenant.api.post(f"/v1/jobs/{job_id}/cancel")).status_code == 202
    assert ended["errorCode"] == "WorkflowGone" and "terminated" in ended["error"], ended
    assert (node["data"]["status"], node["data"]["jobId"]) == ("error", first)
    assert still == "running", "a job whose workflow runs was ended"
    assert_woken_before_any_recheck(history)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_tenants_upload_is_stored_in_its_own_folder_and_its_url_names_it(
    tenant_stack: Stack, tenants: tuple[Tenant, Tenant]
) -> None:
    acme, _ = tenants
    image = png_bytes()
    ticket = (await acme.api.post("/v1/uploads", json={"contentType": "image/png", "bytes": len(image)})).json()
    moved = ticket["uploadUrl"].replace(f"tenant={acme.id}", "tenant=default")
    headers = {"Content-Type": "image/png"}
    async with httpx.AsyncClient(timeout=10) as browser:
        elsewhere = await browser.put(moved, content=image, headers=headers)
        stored = await browser.put(ticket["uploadUrl"], content=image, headers=headers)
        served = await browser.get(ticket["fileUrl"], follow_redirects=True)
    assert elsewhere.status_code == 401, "an upload URL was moved into another tenant's folder"
    assert stored.status_code == 204, stored.text
    folder = tenant_stack.settings.local_storage_dir / "tenants" / acme.id / "uploads"
    assert [path.read_bytes() for path in folder.iterdir()] == [image]
    assert served.content == image
