"""Figure 9: a canvas run against the same jobs started one by one, and how long the run's history grows.

The board is `nodes` image nodes (local provider, no delay) in chains of `CHAIN` (each refines the one before), so
the run has work it must order. The floors are the run's own jobs again (the same requests, refinements with the
image they started from) through POST /v1/jobs: chain by chain, each job once the one before it completed, as a
client would order them itself; and all at once, as if nothing depended on anything. All are timed from the first
request to the end.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import text

from bench.drive import BenchConfig, history_length, job_completes, new_tag, poll, post_job, wait_for_closed
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


async def run_requests(stack: BenchStack, run_id: str, canvas: str) -> list[dict[str, Any]]:
    """The run's own jobs as POST /v1/jobs bodies on `canvas`, each with the request it ran with (refinements with
    the image they started from), in node order: a chain's nodes one after another."""
    async with stack.sessions() as session:
        found = await session.execute(
            text(
                "SELECT r.node_id, r.provider, r.request FROM canvas_run_nodes n JOIN runs r ON r.id = n.job_id"
                " WHERE n.canvas_run_id = :run"
            ),
            {"run": run_id},
        )
        requests = sorted(found.all(), key=lambda row: int(row[0].removeprefix("n")))
    return [
        {"workflowId": canvas, "nodeId": node, "provider": provider, "promptSpec": request["promptSpec"]}
        for node, provider, request in requests
    ]


async def same_jobs_at_once(stack: BenchStack, config: BenchConfig, run_id: str) -> float:
    """The run's own jobs again, all started at once through POST /v1/jobs: the same work, nothing ordered."""
    canvas = new_tag("canvas-floor")
    bodies = await run_requests(stack, run_id, canvas)
    started = time.time()
    for body in bodies:
        await post_job(stack.http, body)
    closes = await wait_for_closed(stack, canvas, len(bodies), config)
    return max(close.timestamp() for close in closes) - started


async def same_jobs_chain_by_chain(stack: BenchStack, config: BenchConfig, run_id: str) -> float:
    """The run's own jobs again through POST /v1/jobs, as a client would order them without canvas runs: every
    chain at once, each job of a chain started once the one before it completed."""
    canvas = new_tag("canvas-chains")
    bodies = await run_requests(stack, run_id, canvas)
    chains = [bodies[start : start + CHAIN] for start in range(0, len(bodies), CHAIN)]

    async def one_chain(chain: list[dict[str, Any]]) -> None:
        for body in chain:
            await job_completes(stack, await post_job(stack.http, body))  # its stream's `completed`, as a client hears

    started = time.time()
    await asyncio.gather(*(one_chain(chain) for chain in chains))
    closes = await wait_for_closed(stack, canvas, len(bodies), config)
    return max(close.timestamp() for close in closes) - started


async def canvas_run(stack: BenchStack, config: BenchConfig, workers: Workers) -> Figure:
    seconds, run_id = await run_board(stack, config, config.board_nodes)
    history = await history_length(stack, run_id)
    _, large_run = await run_board(stack, config, config.large_board_nodes)
    large_history = await history_length(stack, large_run)
    chain_by_chain = await same_jobs_chain_by_chain(stack, config, run_id)
    at_once = await same_jobs_at_once(stack, config, run_id)
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
            Series.of_value(
                f"the same {config.board_nodes} jobs, each chain in order", chain_by_chain, config.board_nodes
            ),
            Series.of_value(
                f"the same {config.board_nodes} jobs at once, ignoring the chains", at_once, config.board_nodes
            ),
        ],
        method=(
            "local provider, no delay. Product: POST .../runs until the run reads completed (polled every 50 ms); "
            "floors: the run's own jobs, each with the request it ran (refinements with their input image), POSTed "
            "to /v1/jobs until the last workflow closed: every chain at once with each job started when the one "
            "before it completed, as its stream said (what a client does without canvas runs), or all at once, as "
            "if nothing depended on anything. parentHistoryEvents: the run workflow's history length, for "
            f"{config.board_nodes} and {config.large_board_nodes} nodes."
        ),
    )
