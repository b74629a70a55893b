"""Canvas runs through the handoff, one run per board, and board saves that neither deadlock nor lose updates.

A run start answers once its run and plan are committed; the workers' sweep starts what a dead API process left,
and cancelling a run whose start is still to come ends it. The drill with the API killed during 20 run starts is
in tests/test_drills.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.routes.canvas_runs import plan_canvas_run
from core.config import Settings
from core.db import transaction
from handoff.sweep import Handoff
from models.schemas import CanvasRunRequest
from providers.discovery import build_directory
from providers.registry import build_providers
from store import canvas_runs, canvases
from tests.fixtures.stack import Stack, make_settings, running_stack
from tests.test_canvas_runs import edge, finished_run, image_node, save_board, start_run, states
from tests.test_start_path import RefusingClient
from worker import sweep_once, worker_resources


@pytest.fixture
async def run_stack(stack_settings: Settings, temporal_client: Client) -> AsyncIterator[Stack]:
    # The stack's own sweep passes once at its start, then not for an hour: the tests here run the sweep themselves.
    settings = make_settings(
        stack_settings, DOWNLOAD_ALLOWLIST=["127.0.0.1"], LOCAL_PROVIDER_DELAY_MS=0, SWEEP_INTERVAL_SECONDS=3600.0
    )
    async with running_stack(settings, temporal_client) as stack:
        yield stack


def new_canvas() -> str:
    return "c-" + uuid.uuid4().hex[:10]


async def record_run_without_starting(stack: Stack, sessions: async_sessionmaker[AsyncSession], canvas_id: str) -> str:
    """What an API killed between its commit and the workflow's start leaves: the run and its plan, no workflow."""
    state = SimpleNamespace(
        settings=stack.settings, providers=build_providers(stack.settings), models=build_directory(stack.settings)
    )
    async with sessions() as session:
        board = await canvases.read_board(session, canvas_id=canvas_id)
    assert board is not None
    run_id = "run_" + uuid.uuid4().hex
    plan = plan_canvas_run(state, canvas_id, board, CanvasRunRequest(), run_id, {})  # type: ignore[arg-type]
    async with transaction(sessions) as session:
        assert await canvas_runs.create_canvas_run(session, plan=plan) is None
    return plan.run_id


async def age(sessions: async_sessionmaker[AsyncSession], run_id: str) -> None:
    async with transaction(sessions) as session:
        await session.execute(
            text("UPDATE canvas_runs SET created_at = now() - interval '5 minutes' WHERE id = :id"), {"id": run_id}
        )


async def started_at(sessions: async_sessionmaker[AsyncSession], run_id: str) -> Any:
    async with sessions() as session:
        found = await session.execute(
            text("SELECT workflow_started_at FROM canvas_runs WHERE id = :id"), {"id": run_id}
        )
        return found.scalar_one()


async def test_a_run_start_is_confirmed_once_its_workflow_exists(
    run_stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    canvas_id = new_canvas()
    await save_board(run_stack, canvas_id, [image_node("A", "a kite")], [])

    run = await finished_run(run_stack, canvas_id, (await start_run(run_stack, canvas_id))["runId"])

    assert run["status"] == "completed", run
    assert await started_at(db_sessions, run["runId"]) is not None


async def test_the_worker_sweep_starts_a_run_its_api_process_left(
    run_stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    canvas_id = new_canvas()
    await save_board(run_stack, canvas_id, [image_node("A", "a kite"), image_node("B", "kites")], [edge("A", "B")])
    run_id = await record_run_without_starting(run_stack, db_sessions, canvas_id)
    await age(db_sessions, run_id)

    async with worker_resources(run_stack.settings) as resources:
        assert await sweep_once(run_stack.client, run_stack.settings, resources) >= 1

    run = await finished_run(run_stack, canvas_id, run_id)
    assert states(run) == {"A": "completed", "B": "completed"}
    assert await started_at(db_sessions, run_id) is not None


async def test_cancelling_a_run_whose_start_is_still_to_come_ends_it_and_its_nodes(
    run_stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    canvas_id = new_canvas()
    await save_board(run_stack, canvas_id, [image_node("A", "a kite"), image_node("B", "kites")], [edge("A", "B")])
    run_id = await record_run_without_starting(run_stack, db_sessions, canvas_id)

    cancelled = await run_stack.api.post(f"/v1/canvases/{canvas_id}/runs/{run_id}/cancel")

    assert cancelled.status_code == 202, cancelled.text
    run = await finished_run(run_stack, canvas_id, run_id)
    assert run["status"] == "cancelled", run
    board = (await run_stack.api.get(f"/v1/canvases/{canvas_id}")).json()
    assert {node["data"]["runState"] for node in board["nodes"]} == {"cancelled"}


async def test_a_run_start_refused_for_good_fails_the_run_and_its_nodes(
    run_stack: Stack, db_sessions: async_sessionmaker[AsyncSession]
) -> None:
    canvas_id = new_canvas()
    await save_board(run_stack, canvas_id, [image_node("A", "a kite")], [])
    run_id = await record_run_without_starting(run_stack, db_sessions, canvas_id)
    async with db_sessions() as session:
        plan = await canvas_runs.unstarted_plan(session, run_id=run_id, max_parallel=4)
    assert plan is not None

    async def refusing() -> Client:
        return RefusingClient()  # type: ignore[return-value]

    handoff = Handoff(refusing, run_stack.settings, db_sessions)
    await handoff.start_canvas_run(plan)
    await handoff.aclose()

    run = await finished_run(run_stack, canvas_id, run_id, timeout=5)
    assert (run["status"], states(run)) == ("failed", {"A": "failed"})
    assert await started_at(db_sessions, run_id) is not None, "a run failed for good is not left for the sweep"


async def test_five_concurrent_starts_on_one_board_make_one_run_and_the_others_409(run_stack: Stack) -> None:
    canvas_id = new_canvas()
    nodes = [image_node(f"n{index}", f"tile {index}") for index in range(15)]
    await save_board(run_stack, canvas_id, nodes, [])
    bodies: list[dict[str, Any]] = [{}, {"force": True}, {"nodeIds": ["n1", "n2"]}, {}, {"fromNodeId": "n3"}]

    answers = await asyncio.gather(
        *(run_stack.api.post(f"/v1/canvases/{canvas_id}/runs", json=body) for body in bodies)
    )

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [202, 409, 409, 409, 409], [answer.text for answer in answers]
    (started,) = [answer.json() for answer in answers if answer.status_code == 202]
    for refused in (answer.json() for answer in answers if answer.status_code == 409):
        assert (refused["code"], refused["details"]) == ("run_active", [{"runId": started["runId"]}])
    await finished_run(run_stack, canvas_id, started["runId"])
    jobs = (await run_stack.api.get("/v1/jobs", params={"workflowId": canvas_id, "limit": 200})).json()["items"]
    assert len(jobs) <= len(nodes)


async def test_saves_racing_run_starts_never_deadlock_in_20_rounds(run_stack: Stack) -> None:
    canvas_id = new_canvas()
    names = [f"n{index}" for index in range(12)]

    def board(shift: int) -> list[dict[str, Any]]:
        return [
            {**image_node(name, f"tile {name}"), "position": {"x": shift + 10 * i, "y": 0}}
            for i, name in enumerate(names)
        ]

    await save_board(run_stack, canvas_id, board(0), [])
    for round_ in range(20):
        answers = await asyncio.gather(
            run_stack.api.put(f"/v1/canvases/{canvas_id}", json={"nodes": board(round_), "edges": []}),
            run_stack.api.post(f"/v1/canvases/{canvas_id}/runs", json={}),
            run_stack.api.put(f"/v1/canvases/{canvas_id}", json={"nodes": board(-round_), "edges": []}),
        )
        assert [answer.status_code for answer in answers][0::2] == [200, 200], [a.text for a in answers]
        assert answers[1].status_code in (202, 409), answers[1].text
        if answers[1].status_code == 202:
            await finished_run(run_stack, canvas_id, answers[1].json()["runId"])


async def test_a_save_made_from_a_stale_version_gets_409_and_changes_nothing(run_stack: Stack) -> None:
    canvas_id = new_canvas()
    await save_board(run_stack, canvas_id, [image_node("A", "a kite")], [])
    read = (await run_stack.api.get(f"/v1/canvases/{canvas_id}")).json()
    mine = [*read["nodes"], image_node("mine", "my node")]
    theirs = [*read["nodes"], image_node("theirs", "their node")]

    first = await run_stack.api.put(
        f"/v1/canvases/{canvas_id}", json={"nodes": theirs, "edges": [], "version": read["version"]}
    )
    stale = await run_stack.api.put(
        f"/v1/canvases/{canvas_id}", json={"nodes": mine, "edges": [], "version": read["version"]}
    )
    stale_by_header = await run_stack.api.put(
        f"/v1/canvases/{canvas_id}", json={"nodes": mine, "edges": []}, headers={"If-Match": f'"{read["version"]}"'}
    )

    assert first.status_code == 200, first.text
    for answer in (stale, stale_by_header):
        assert (answer.status_code, answer.json()["code"]) == (409, "board_version_conflict"), answer.text
        assert answer.json()["details"] == [{"currentVersion": first.json()["version"]}]
    now = (await run_stack.api.get(f"/v1/canvases/{canvas_id}")).json()
    assert {node["id"] for node in now["nodes"]} == {"A", "theirs"}


async def test_a_node_deleted_while_its_run_goes_on_is_not_brought_back(
    stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, DOWNLOAD_ALLOWLIST=["127.0.0.1"], LOCAL_PROVIDER_DELAY_MS=1500)
    canvas_id = new_canvas()
    async with running_stack(settings, temporal_client) as stack:
        await save_board(stack, canvas_id, [image_node("A", "a kite"), image_node("B", "kites")], [edge("A", "B")])
        run = await start_run(stack, canvas_id)
        await save_board(stack, canvas_id, [image_node("A", "a kite")], [])  # B goes while A is still drawn

        final = await finished_run(stack, canvas_id, run["runId"])
        board = (await stack.api.get(f"/v1/canvases/{canvas_id}")).json()

    assert states(final)["A"] == "completed", final
    assert [node["id"] for node in board["nodes"]] == ["A"]
