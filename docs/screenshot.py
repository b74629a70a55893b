"""Make the README's pictures: docs/board.png (a completed, a running and a failed node); with --run,
docs/board-run.png (a canvas run caught mid-way: done, running, waiting, failed and skipped nodes); with --crowd,
docs/board-40-1440x900.png and docs/board-40-1280x720.png (40 nodes fitted in view: semantic zoom shows each as
its picture and status).

Against a running stack whose local provider takes a while, so nodes can be caught mid-run:

    LOCAL_PROVIDER_DELAY_MS=8000 imagejobs dev        # in one terminal
    .venv/bin/python docs/screenshot.py [--run]       # in another
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import async_playwright

OUTPUT = Path(__file__).resolve().parent / "board.png"
RUN_OUTPUT = Path(__file__).resolve().parent / "board-run.png"
CROWD_OUTPUTS = {(1440, 900): "board-40-1440x900.png", (1280, 720): "board-40-1280x720.png"}
CROWD_PROMPTS = ("a lighthouse at dusk", "the harbour at night", "fishing boats in fog", "a storm over the pier")
NODES = [
    {"id": "lighthouse", "position": {"x": 0, "y": 40}, "data": {"prompt": "a lighthouse at dusk", "size": "512x512"}},
    {
        "id": "night",
        "position": {"x": 340, "y": 0},
        "data": {"prompt": "the same lighthouse at night", "size": "512x512"},
    },
    {"id": "storm", "position": {"x": 680, "y": 40}, "data": {"prompt": "a storm over the harbour", "size": "512x512"}},
]


async def wait_for(api: httpx.AsyncClient, job_id: str, statuses: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        record: dict[str, Any] = (await api.get(f"/v1/jobs/{job_id}")).raise_for_status().json()
        if record["status"] in statuses:
            return record
        await asyncio.sleep(0.2)
    raise TimeoutError(f"job {job_id} never reached {statuses}")


async def start(api: httpx.AsyncClient, canvas_id: str, node: str, prompt: str, **spec: Any) -> str:
    body = {"workflowId": canvas_id, "nodeId": node, "promptSpec": {"basePrompt": prompt, "size": "512x512", **spec}}
    job_id: str = (await api.post("/v1/jobs", json=body)).raise_for_status().json()["jobId"]
    return job_id


def image_node(node_id: str, x: float, y: float, prompt: str) -> dict[str, Any]:
    return {"id": node_id, "position": {"x": x, "y": y}, "data": {"prompt": prompt, "size": "512x512"}}


async def shoot(
    base_url: str, canvas_id: str, output: Path, *ready: str, viewport: tuple[int, int] = (1100, 1000), fit: bool = True
) -> None:
    """Open the board and photograph it once every `ready` selector shows (fitted in view, or at its own viewport)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox"]
        )
        page = await browser.new_page(base_url=base_url, viewport={"width": viewport[0], "height": viewport[1]})
        await page.goto(f"/canvases/{canvas_id}")
        for selector in ready:
            await page.locator(selector).first.wait_for(timeout=120_000)
        for dismiss in await page.get_by_role("button", name="Dismiss").all():  # failure toasts, out of the picture
            await dismiss.click()
        if fit:
            await page.get_by_role("button", name="Fit View").click()  # React Flow's own control: every node in view
        await page.wait_for_timeout(1500)  # a little progress on the bars
        await page.screenshot(path=output)
        await browser.close()
    sys.stdout.write(f"wrote {output}\n")


async def run_picture(base_url: str) -> None:
    """A board run by "Run all": a tree from the lighthouse, and a branch from a sketch whose file is missing."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as api:
        canvas_id = (await api.post("/v1/canvases", json={"name": "Harbour run"})).raise_for_status().json()["id"]
        missing = f"{base_url}/files/images/{canvas_id}/sketch-that-was-never-uploaded.png"
        nodes = [
            image_node("lighthouse", 0, 0, "a lighthouse at dusk"),
            image_node("night", 330, 0, "the same lighthouse at night"),
            image_node("ship", 660, 0, "a ship passing the lit lighthouse"),
            image_node("snow", 330, 400, "the lighthouse in snow"),
            {"id": "sketch", "type": "image", "position": {"x": 0, "y": 800}, "data": {"sourceUrl": missing}},
            image_node("painted", 330, 800, "the sketch, painted"),
            image_node("framed", 660, 800, "the painting, framed"),
        ]
        pairs = (
            ("lighthouse", "night"),
            ("lighthouse", "snow"),
            ("night", "ship"),
            ("sketch", "painted"),
            ("painted", "framed"),
        )
        edges = [{"id": f"{source}-{target}", "source": source, "target": target} for source, target in pairs]
        board = {"nodes": nodes, "edges": edges, "viewport": {"x": 20, "y": 20, "zoom": 0.78}}
        (await api.put(f"/v1/canvases/{canvas_id}", json=board)).raise_for_status()
        (await api.post(f"/v1/canvases/{canvas_id}/runs", json={})).raise_for_status()
    await shoot(
        base_url,
        canvas_id,
        RUN_OUTPUT,
        '[data-node-id="framed"] .badge-run-skipped',
        '[data-node-id="night"] [role="progressbar"]',
        viewport=(1100, 1260),
        fit=False,
    )


async def main(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as api:
        canvas_id = (await api.post("/v1/canvases", json={"name": "Harbour studies"})).raise_for_status().json()["id"]
        edges = [{"id": "lighthouse-night", "source": "lighthouse", "target": "night"}]
        board = {"nodes": NODES, "edges": edges, "viewport": {"x": 40, "y": 60, "zoom": 1}}
        (await api.put(f"/v1/canvases/{canvas_id}", json=board)).raise_for_status()
        first = await wait_for(api, await start(api, canvas_id, "lighthouse", "a lighthouse at dusk"), ("completed",))
        missing = f"{base_url}/files/images/{canvas_id}/sketch-that-was-never-uploaded.png"
        failed = await start(api, canvas_id, "storm", "a storm over the harbour", previousImage=missing)
        await wait_for(api, failed, ("failed",))
        running = await start(api, canvas_id, "night", "the same lighthouse at night", previousImage=first["imageUrl"])
        await wait_for(api, running, ("running",))
    await shoot(base_url, canvas_id, OUTPUT, '[data-node-id="night"] [role="progressbar"]')


async def crowd_pictures(base_url: str) -> None:
    """Forty nodes in a grid, all generated but two still running, fitted in view at two window sizes."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as api:
        canvas_id = (await api.post("/v1/canvases", json={"name": "Forty studies"})).raise_for_status().json()["id"]
        nodes = [
            image_node(f"n{index}", (index % 8) * 300, (index // 8) * 340, f"{CROWD_PROMPTS[index % 4]}, study {index}")
            for index in range(40)
        ]
        (await api.put(f"/v1/canvases/{canvas_id}", json={"nodes": nodes, "edges": []})).raise_for_status()
        jobs = [await start(api, canvas_id, node["id"], node["data"]["prompt"]) for node in nodes[:38]]
        for job_id in jobs:
            await wait_for(api, job_id, ("completed",))
        for node in nodes[38:]:
            await start(api, canvas_id, node["id"], node["data"]["prompt"])
    for viewport, name in CROWD_OUTPUTS.items():
        output = OUTPUT.parent / name
        await shoot(base_url, canvas_id, output, '[data-node-id="n39"] [role="progressbar"]', viewport=viewport)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the stack's API (default: %(default)s)")
    parser.add_argument("--run", action="store_true", help="make docs/board-run.png instead")
    parser.add_argument("--crowd", action="store_true", help="make the two 40-node pictures instead")
    arguments = parser.parse_args()
    if arguments.crowd:
        asyncio.run(crowd_pictures(arguments.api))
    else:
        asyncio.run(run_picture(arguments.api) if arguments.run else main(arguments.api))
