"""Make docs/board.png: a board with a completed, a running and a failed node, as the README shows it.

Against a running stack whose local provider takes a while, so one node can be caught mid-run:

    LOCAL_PROVIDER_DELAY_MS=8000 imagejobs dev        # in one terminal
    .venv/bin/python docs/screenshot.py               # in another
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
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=["--no-sandbox"]
            )
            page = await browser.new_page(base_url=base_url, viewport={"width": 1100, "height": 720})
            await page.goto(f"/canvases/{canvas_id}")
            await page.locator('[data-node-id="night"] [role="progressbar"]').wait_for()
            await page.wait_for_timeout(1500)  # a little progress on the bar
            await page.screenshot(path=OUTPUT)
            await browser.close()
    sys.stdout.write(f"wrote {OUTPUT}\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--api", default="http://127.0.0.1:8000", help="the stack's API (default: %(default)s)")
    asyncio.run(main(parser.parse_args().api))
