"""Figure 9: a canvas run against the same jobs started one by one, and how long the run's history grows.

The board is `nodes` image nodes (local provider, no delay) in chains of `CHAIN` (each refines the one before), so
the run has work it must order; the floor is the run's own jobs again (the same requests, refinements with the
image they started from) through POST /v1/jobs at once. Both are timed from the first request to the end.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from bench.drive import BenchConfig, history_length, new_tag, poll, wait_for_closed
from bench.report import Figure, Series
from bench.stack import BenchError, BenchStack, Workers

CHAIN = 5


def board(nodes: int) -> dict[str, Any]:
    """`nodes` image nodes in chains of CHAIN."""
    image_nodes = [
        {"id": f"n{index}", "type": "image_generation", "data": {"prompt": f"benchmark node {index}", "size": "64x64"}}
        for index in range(nodes)
    ]
    edges = [
        {"id": f"e{index}", "source": f"n{index - 1}", "target": f"n{index}"} for index in range(nodes) if index % CHAIN
    ]
    return {"nodes": image_nodes, "edges": edges}


async def run_board(stack: BenchStack, config: BenchConfig, nodes: int) -> tuple[float, str]:
    """Save a board of `nodes`, run it, wait for the run to complete; (seconds, run id)."""
    canvas = new_tag("canvas-run")
    saved = await stack.http.put(f"/v1/canvases/{canvas}", json=board(nodes))
    if saved.status_code != 200:
        raise BenchError(f"saving the board answered {saved.status_code}: {saved.text}")
    started = time.monotonic()
    answer = await stack.http.post(f"/v1/canvases/{canvas}/runs", json={})
    if answer.status_code != 202:
        raise BenchError(f"starting the run answered {answer.status_code}: {answer.text}")
    run_path = f"/v1/canvases/{canvas}/runs/{answer.json()['runId']}"
    finished: dict[str, Any] = {}

    async def ended() -> bool:
        finished.update((await stack.http.get(run_path)).json())
        return finished["status"] != "running"

    await poll(ended, f"the {nodes}-node run to end", config.timeout, interval=0.05)
    if finished["status"] != "completed":
        raise BenchError(f"the {nodes}-node run ended {finished['status']}")
    return time.monotonic() - started, str(answer.json()["runId"])


async def same_jobs_independently(stack: BenchStack, config: BenchConfig, run_id: str) -> float:
    """The run's own jobs again, each with the request it ran with (refinements with the image they started
    from), all started at once through POST /v1/jobs: the same work with nothing to order."""
    async with stack.sessions() as session:
        found = await session.execute(
            text(
                "SELECT r.node_id, r.provider, r.request FROM canvas_run_nodes n JOIN runs r ON r.id = n.job_id"
                " WHERE n.canvas_run_id = :run"
            ),
            {"run": run_id},
        )
        requests = found.all()
    canvas = new_tag("canvas-floor")
    bodies = [
        {"workflowId": canvas, "nodeId": node, "provider": provider, "promptSpec": request["promptSpec"]}
        for node, provider, request in requests
    ]
    started = time.time()
    for body in bodies:
        answer = await stack.http.post("/v1/jobs", json=body)
        if answer.status_code != 202:
            raise BenchError(f"POST /v1/jobs answered {answer.status_code}: {answer.text}")
    closes = await wait_for_closed(stack, canvas, len(bodies), config)
    return max(close.timestamp() for close in closes) - started


async def canvas_run(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    seconds, run_id = await run_board(stack, config, config.board_nodes)
    history = await history_length(stack, run_id)
    _, large_run = await run_board(stack, config, config.large_board_nodes)
    large_history = await history_length(stack, large_run)
    floor = await same_jobs_independently(stack, config, run_id)
    return Figure(
        number="9",
        title=f"canvas run, {config.board_nodes} nodes in chains of {CHAIN}",
        unit="s",
        product=Series.of_value(
            f"one canvas run (CANVAS_RUN_MAX_PARALLEL={stack.settings.CANVAS_RUN_MAX_PARALLEL})",
            seconds,
            config.board_nodes,
            parentHistoryEvents=history,
            parentHistoryEventsLargeBoard=large_history,
            largeBoardNodes=config.large_board_nodes,
            temporalHistoryLimit=51_200,
        ),
        floors=[
            Series.of_value(f"the same {config.board_nodes} jobs started independently", floor, config.board_nodes)
        ],
        method=(
            "local provider, no delay. Product: POST .../runs until the run reads completed; floor: the run's own "
            "jobs, each with the request it ran (refinements with their input image), POSTed to /v1/jobs at once "
            "until the last workflow closed. parentHistoryEvents: "
            f"the run workflow's history length, for {config.board_nodes} and {config.large_board_nodes} nodes."
        ),
    )
