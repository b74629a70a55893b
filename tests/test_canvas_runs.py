"""Canvas runs end to end: a board's image nodes as one graph workflow on real Temporal, PostgreSQL and the local
provider (which honours previousImage visibly), and the refusals that stop a run before anything starts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.config import Settings
from tests.fakes.app import FakeProviders
from tests.fakes.openai import OPENAI
from tests.fixtures.stack import Stack, make_settings, running_stack, was_cancelled

FINISHED = ("completed", "failed", "cancelled")
PROMPTS = {"A": "a lighthouse", "B": "the lighthouse at night", "C": "the lighthouse in snow", "D": "with a ship"}


def image_node(node_id: str, prompt: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "image_generation", "position": {"x": 0, "y": 0}, "data": {"prompt": prompt, **data}}


def edge(source: str, target: str) -> dict[str, str]:
    return {"id": f"{source}-{target}", "source": source, "target": target}


TREE = [edge("A", "B"), edge("A", "C"), edge("B", "D")]


@pytest.fixture
async def run_stack(stack_settings: Settings, temporal_client: Client) -> AsyncIterator[Stack]:
    # Refinements fetch their parent's image from this API's own /files (loopback), as `imagejobs dev` allows.
    settings = make_settings(stack_settings, DOWNLOAD_ALLOWLIST=["127.0.0.1"], LOCAL_PROVIDER_DELAY_MS=0)
    async with running_stack(settings, temporal_client) as stack:
        yield stack


async def save_board(stack: Stack, canvas_id: str, nodes: list[dict[str, Any]], edges: list[dict[str, str]]) -> None:
    saved = await stack.api.put(f"/v1/canvases/{canvas_id}", json={"nodes": nodes, "edges": edges})
    assert saved.status_code == 200, saved.text


async def start_run(stack: Stack, canvas_id: str, **body: Any) -> dict[str, Any]:
    started = await stack.api.post(f"/v1/canvases/{canvas_id}/runs", json=body)
    assert started.status_code == 202, started.text
    run: dict[str, Any] = started.json()
    return run


async def finished_run(stack: Stack, canvas_id: str, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = (await stack.api.get(f"/v1/canvases/{canvas_id}/runs/{run_id}")).json()
        if run["status"] in FINISHED:
            return run
        assert time.monotonic() < deadline, run
        await asyncio.sleep(0.2)


def states(run: dict[str, Any]) -> dict[str, str]:
    return {node["nodeId"]: node["state"] for node in run["nodes"]}


def jobs_of(run: dict[str, Any]) -> dict[str, str]:
    return {node["nodeId"]: node["jobId"] for node in run["nodes"]}


async def job(stack: Stack, job_id: str) -> dict[str, Any]:
    return await stack.job(job_id)


async def test_a_tree_runs_each_node_from_its_parents_image_then_caches_and_reruns_only_what_changed(
    run_stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    stack, canvas_id = run_stack, "canvas-run-tree"
    await save_board(stack, canvas_id, [image_node(key, prompt, seed=7) for key, prompt in PROMPTS.items()], TREE)

    first = await finished_run(stack, canvas_id, (await start_run(stack, canvas_id))["runId"])

    assert first["status"] == "completed", first
    assert states(first) == dict.fromkeys("ABCD", "completed")
    for node in first["nodes"]:
        assert node["startedAt"] and node["finishedAt"] and node["startedAt"] <= node["finishedAt"], node
    records = {node: await job(stack, job_id) for node, job_id in jobs_of(first).items()}
    for child, parent in (("B", "A"), ("C", "A"), ("D", "B")):
        assert records[child]["promptSpec"]["previousImage"] == records[parent]["imageUrl"], child
        assert records[child]["startedAt"] >= records[parent]["finishedAt"], child
    assert "previousImage" not in records["A"]["promptSpec"]
    async with db_sessions() as session:  # a run's jobs are recorded by their own workflows: never swept
        found = await session.execute(
            text("SELECT count(*) FROM runs WHERE id = ANY(:ids) AND workflow_started_at IS NOT NULL"),
            {"ids": list(jobs_of(first).values())},
        )
    assert found.scalar_one() == 4
    board = (await stack.api.get(f"/v1/canvases/{canvas_id}")).json()
    shown = {node["id"]: node["data"] for node in board["nodes"]}
    assert {key: data["imageUrl"] for key, data in shown.items()} == {k: r["imageUrl"] for k, r in records.items()}
    assert {data["runState"] for data in shown.values()} == {"completed"}

    second = await finished_run(stack, canvas_id, (await start_run(stack, canvas_id))["runId"])
    assert states(second) == dict.fromkeys("ABCD", "cached")
    assert jobs_of(second) == jobs_of(first)

    changed = [image_node(key, prompt + (" at dawn" if key == "C" else ""), seed=7) for key, prompt in PROMPTS.items()]
    await save_board(stack, canvas_id, changed, TREE)
    third = await finished_run(stack, canvas_id, (await start_run(stack, canvas_id))["runId"])
    assert states(third) == {"A": "cached", "B": "cached", "C": "completed", "D": "cached"}
    assert jobs_of(third)["C"] != jobs_of(first)["C"]
    assert (await job(stack, jobs_of(third)["C"]))["promptSpec"]["previousImage"] == records["A"]["imageUrl"]

    await save_board(stack, canvas_id, changed, [*TREE, edge("D", "A")])
    cycle = await stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={})
    assert (cycle.status_code, cycle.json()["code"]) == (422, "cycle")
    # Nodes are named as people know them, by their prompts; their ids are in `details`.
    cycle_names = " -> ".join(f"“{PROMPTS[key]}”" for key in ("A", "B", "D", "A"))
    assert cycle.json()["message"] == f"The board's edges make a cycle: {cycle_names}."
    assert {detail["nodeId"] for detail in cycle.json()["details"]} == {"A", "B", "D"}


async def test_force_and_partial_runs(run_stack: Stack) -> None:
    stack, canvas_id = run_stack, "canvas-run-partial"
    await save_board(stack, canvas_id, [image_node(key, prompt) for key, prompt in PROMPTS.items()], TREE)
    first = await finished_run(stack, canvas_id, (await start_run(stack, canvas_id))["runId"])

    from_b = await finished_run(
        stack, canvas_id, (await start_run(stack, canvas_id, fromNodeId="B", force=True))["runId"]
    )
    assert states(from_b) == {"B": "completed", "D": "completed"}
    b_job = await job(stack, jobs_of(from_b)["B"])
    first_a = await job(stack, jobs_of(first)["A"])
    assert b_job["promptSpec"]["previousImage"] == first_a["imageUrl"]  # A is outside the run: its image goes in

    only_c = await finished_run(
        stack, canvas_id, (await start_run(stack, canvas_id, nodeIds=["C"], force=True))["runId"]
    )
    assert states(only_c) == {"C": "completed"}
    # The board shows the newest run only: nodes it left out no longer carry an earlier run's state.
    board = (await stack.api.get(f"/v1/canvases/{canvas_id}")).json()
    run_states = {node["id"]: node["data"].get("runState") for node in board["nodes"]}
    assert run_states == {"A": None, "B": None, "C": "completed", "D": None}


@pytest.mark.parametrize(
    ("nodes", "edges", "code", "culprits"),
    [
        ([image_node("A", "x"), image_node("B", "")], [edge("A", "B")], "missing_prompt", {"B"}),
        (
            [image_node("A", "x"), image_node("B", "y", provider="stability", model="stable-image-core")],
            [edge("A", "B")],
            "input_image_not_supported",
            {"B"},
        ),
        (
            [image_node("A", "x"), image_node("B", "y"), image_node("C", "z")],
            [edge("A", "C"), edge("B", "C")],
            "too_many_inputs",
            {"C"},
        ),
        ([image_node("A", "x"), image_node("B", "y")], [edge("A", "B"), edge("B", "A")], "cycle", {"A", "B"}),
        (
            [{"id": "U", "type": "image", "data": {}}, image_node("B", "y")],
            [edge("U", "B")],
            "upstream_without_image",
            {"U"},
        ),
    ],
    ids=["no-prompt", "edge-into-text-only-model", "two-inputs", "cycle", "upload-without-image"],
)
async def test_what_cannot_run_is_refused_with_422_naming_the_nodes_and_starts_nothing(
    nodes: list[dict[str, Any]],
    edges: list[dict[str, str]],
    code: str,
    culprits: set[str],
    stack_settings: Settings,
    temporal_client: Client,
) -> None:
    settings = make_settings(stack_settings, OPENAI_API_KEY="sk-test", STABILITY_API_KEY="sk-test")
    async with running_stack(settings, temporal_client, workers=False) as stack:
        canvas_id = f"canvas-refused-{code}"
        await save_board(stack, canvas_id, nodes, edges)
        refused = await stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={})
        listed = (await stack.api.get("/v1/jobs", params={"workflowId": canvas_id})).json()
    assert (refused.status_code, refused.json()["code"]) == (422, code), refused.text
    assert {detail["nodeId"] for detail in refused.json()["details"]} == culprits
    assert listed["items"] == []


async def test_a_failed_node_skips_what_is_below_it_and_the_other_branch_goes_on(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    fake_providers.script.queue(OPENAI, "moderation")
    settings = make_settings(provider_settings, LOCAL_PROVIDER_DELAY_MS=0)
    nodes = [
        image_node("A", "a castle", provider="openai", model="gpt-image-2.5-flare"),
        image_node("B", "the castle at night"),
        image_node("C", "a meadow"),
        image_node("D", "the meadow in rain"),
    ]
    async with running_stack(settings, temporal_client) as stack:
        canvas_id = "canvas-run-failure"
        await save_board(stack, canvas_id, nodes, [edge("A", "B"), edge("C", "D")])
        run = await finished_run(stack, canvas_id, (await start_run(stack, canvas_id))["runId"])
        board = (await stack.api.get(f"/v1/canvases/{canvas_id}")).json()

    assert run["status"] == "failed"
    assert states(run) == {"A": "failed", "B": "skipped", "C": "completed", "D": "completed"}
    by_node = {node["nodeId"]: node for node in run["nodes"]}
    assert "refused the prompt" in by_node["A"]["reason"]
    assert by_node["B"]["reason"] == "“a castle” did not produce an image" and by_node["B"]["jobId"] is None
    shown = {node["id"]: node["data"] for node in board["nodes"]}
    assert (shown["B"]["runState"], shown["B"]["runReason"]) == ("skipped", "“a castle” did not produce an image")


async def test_a_run_sums_its_jobs_costs_and_each_node_shows_its_own(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    settings = make_settings(provider_settings, LOCAL_PROVIDER_DELAY_MS=0, DOWNLOAD_ALLOWLIST=["127.0.0.1"])
    nodes = [
        image_node("A", "a castle", provider="openai", model="gpt-image-2.5-flare"),
        image_node("B", "the castle at night", provider="openai", model="gpt-image-2.5-flare"),
        image_node("C", "a meadow"),
    ]
    async with running_stack(settings, temporal_client) as stack:
        canvas_id = "canvas-run-costs"
        await save_board(stack, canvas_id, nodes, [edge("A", "B")])
        run = await finished_run(stack, canvas_id, (await start_run(stack, canvas_id))["runId"])
        jobs = {node_id: await stack.job(job_id) for node_id, job_id in jobs_of(run).items()}
        board = (await stack.api.get(f"/v1/canvases/{canvas_id}")).json()

    assert run["status"] == "completed", run
    assert all(job["costUsd"] is not None for job in jobs.values())
    assert jobs["A"]["costUsd"] > 0 and jobs["C"]["costUsd"] == 0  # the local provider is free
    assert run["costUsd"] == pytest.approx(sum(job["costUsd"] for job in jobs.values()))
    assert run["estimatedCostUsd"] == pytest.approx(sum(job["estimatedCostUsd"] for job in jobs.values()))
    by_node = {node["nodeId"]: node for node in run["nodes"]}
    shown = {node["id"]: node["data"] for node in board["nodes"]}
    for node_id, job in jobs.items():
        assert by_node[node_id]["costUsd"] == job["costUsd"]
        assert shown[node_id]["costUsd"] == job["costUsd"]
        assert shown[node_id]["estimatedCostUsd"] == job["estimatedCostUsd"]


async def test_cancelling_a_run_cancels_its_running_job_and_marks_the_rest(
    stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, DOWNLOAD_ALLOWLIST=["127.0.0.1"], LOCAL_PROVIDER_DELAY_MS=20_000)
    async with running_stack(settings, temporal_client) as stack:
        canvas_id = "canvas-run-cancel"
        await save_board(stack, canvas_id, [image_node("A", "slow"), image_node("B", "after")], [edge("A", "B")])
        run = await start_run(stack, canvas_id)
        path = f"/v1/canvases/{canvas_id}/runs/{run['runId']}"
        deadline = time.monotonic() + 20
        while states((await stack.api.get(path)).json())["A"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        cancelled = await stack.api.post(f"{path}/cancel")
        final = await finished_run(stack, canvas_id, run["runId"])
        a_job = await stack.wait(jobs_of(final)["A"])

    assert cancelled.status_code == 202
    assert final["status"] == "cancelled"
    assert states(final) == {"A": "cancelled", "B": "cancelled"}
    assert was_cancelled(a_job)


async def started_slow_run(stack: Stack, canvas_id: str) -> str:
    """A run of A then B on the board, with A's job running (for as long as the stack's provider takes)."""
    await save_board(stack, canvas_id, [image_node("A", "slow"), image_node("B", "after")], [edge("A", "B")])
    run_id: str = (await start_run(stack, canvas_id))["runId"]
    deadline = time.monotonic() + 20
    while states((await stack.api.get(f"/v1/canvases/{canvas_id}/runs/{run_id}")).json())["A"] != "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    return run_id


async def test_a_run_whose_workflow_was_terminated_is_ended_and_frees_its_board(
    stack_settings: Settings, temporal_client: Client
) -> None:
    # The sweep asks about each unfinished run's workflow every second here (every ten minutes by default).
    settings = make_settings(
        stack_settings,
        DOWNLOAD_ALLOWLIST=["127.0.0.1"],
        LOCAL_PROVIDER_DELAY_MS=20_000,
        WORKFLOW_CHECK_SECONDS=1.0,
        SWEEP_INTERVAL_SECONDS=0.5,
    )
    async with running_stack(settings, temporal_client) as stack:
        canvas_id = "canvas-run-gone-" + uuid.uuid4().hex[:6]
        run_id = await started_slow_run(stack, canvas_id)
        await stack.client.get_workflow_handle(run_id).terminate(reason="an operator stopped it")

        final = await finished_run(stack, canvas_id, run_id, timeout=20)
        a_job = await stack.wait(jobs_of(final)["A"], timeout=20)  # its child job went with it, and is ended too
        board = {
            node["id"]: node["data"] for node in (await stack.api.get(f"/v1/canvases/{canvas_id}")).json()["nodes"]
        }
        again = await stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={})
        if again.status_code == 202:
            await stack.api.post(f"/v1/canvases/{canvas_id}/runs/{again.json()['runId']}/cancel")

    assert final["status"] == "failed"
    assert states(final) == {"A": "failed", "B": "failed"}
    assert all("terminated" in node["reason"] for node in final["nodes"]), final["nodes"]
    assert (board["B"]["runState"], board["B"]["runId"]) == ("failed", run_id)
    assert (a_job["status"], a_job["errorCode"]) == ("failed", "WorkflowGone")
    assert again.status_code == 202, again.text  # the board no longer has a run that never ends


async def test_cancelling_a_run_whose_workflow_was_terminated_ends_it(
    stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, DOWNLOAD_ALLOWLIST=["127.0.0.1"], LOCAL_PROVIDER_DELAY_MS=20_000)
    async with running_stack(settings, temporal_client) as stack:
        canvas_id = "canvas-run-gone-" + uuid.uuid4().hex[:6]
        run_id = await started_slow_run(stack, canvas_id)
        await stack.client.get_workflow_handle(run_id).terminate(reason="an operator stopped it")
        cancelled = await stack.api.post(f"/v1/canvases/{canvas_id}/runs/{run_id}/cancel")

    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert states(cancelled.json()) == {"A": "cancelled", "B": "cancelled"}


async def test_nodes_made_by_generate_are_reused_and_a_dry_run_says_so_beforehand(
    run_stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Never pay twice: the cache key is the node's inputs, however its image was made."""
    stack, canvas_id = run_stack, "canvas-made-by-hand"
    nodes = [image_node("A", PROMPTS["A"], seed=7), image_node("B", PROMPTS["B"], seed=7)]
    await save_board(stack, canvas_id, nodes, [edge("A", "B")])
    # Generate, as the canvas app sends it, for A and then for B refining A's image.
    made = {}
    for node_id, previous in (("A", None), ("B", "A")):
        spec = {"basePrompt": PROMPTS[node_id], "styleModifiers": [], "seed": 7, "n": 1}
        if previous:
            spec["previousImage"] = made[previous]["imageUrl"]
        started = await stack.start(workflowId=canvas_id, nodeId=node_id, priority="high", promptSpec=spec)
        made[node_id] = await stack.wait(started["jobId"])
        assert made[node_id]["status"] == "completed"

    preview = await stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={"dryRun": True})
    assert preview.status_code == 200, preview.text
    assert preview.json() == {
        "toGenerate": 0,
        "cached": 2,
        "estimatedCostUsd": 0,
        "nodes": [{"nodeId": "A", "state": "cached"}, {"nodeId": "B", "state": "cached"}],
    }
    async with db_sessions() as session:
        runs = await session.execute(text("SELECT count(*) FROM canvas_runs WHERE canvas_id = :c"), {"c": canvas_id})
    assert runs.scalar_one() == 0, "a dry run started a run"
    forced = (await stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={"dryRun": True, "force": True})).json()
    assert (forced["toGenerate"], forced["cached"], forced["estimatedCostUsd"]) == (2, 0, 0)  # local is free

    run = await finished_run(stack, canvas_id, (await start_run(stack, canvas_id))["runId"])
    assert states(run) == {"A": "cached", "B": "cached"}
    assert jobs_of(run) == {node_id: record["jobId"] for node_id, record in made.items()}

    changed = [image_node("A", PROMPTS["A"], seed=7), image_node("B", PROMPTS["B"] + " in fog", seed=7)]
    await save_board(stack, canvas_id, changed, [edge("A", "B")])
    preview = (await stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={"dryRun": True})).json()
    assert [node["state"] for node in preview["nodes"]] == ["cached", "pending"]
    rerun = await finished_run(stack, canvas_id, (await start_run(stack, canvas_id))["runId"])
    assert states(rerun) == {"A": "cached", "B": "completed"}
    # A run's job is found in the Temporal UI as any job is: by canvas, node, provider and model.
    described = await stack.client.get_workflow_handle(jobs_of(rerun)["B"]).describe()
    attributes = {pair.key.name: pair.value for pair in described.typed_search_attributes}
    ours = {"CanvasWorkflowId": canvas_id, "NodeId": "B", "Provider": "local", "ImageModel": "procedural"}
    assert {name: attributes.get(name) for name in ours} == ours
