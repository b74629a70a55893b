"""Boards through the HTTP API: React Flow's `{nodes, edges, viewport}` saved and read back, the canvas list,
job-owned node fields kept through a save, refused boards, and the `board` event that tells other tabs."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
from PIL import Image
from temporalio.client import Client

from core.config import Settings
from tests.fixtures.stack import Stack, make_settings, running_stack, was_cancelled
from tests.helpers import subscribed

BOARD: dict[str, Any] = {
    "name": "Harbour studies",
    "nodes": [
        {
            "id": "a",
            "type": "image_generation",
            "position": {"x": 0, "y": 0},
            "data": {"prompt": "a harbour", "size": "512x512"},
            "measured": {"width": 260, "height": 300},  # React Flow's own keys: not kept
            "selected": True,
        },
        {"id": "b", "type": "image_generation", "position": {"x": 420.5, "y": 60}, "data": {"prompt": "at night"}},
    ],
    "edges": [{"id": "a-b", "source": "a", "target": "b", "animated": True}],
    "viewport": {"x": 12, "y": -40, "zoom": 0.8},
}


async def new_canvas(stack: Stack) -> str:
    created = await stack.api.post("/v1/canvases", json={"name": "Untitled canvas"})
    assert created.status_code == 201, created.text
    canvas_id: str = created.json()["id"]
    return canvas_id


async def test_a_board_saves_and_reads_back_in_react_flows_shape(stack: Stack) -> None:
    canvas_id = await new_canvas(stack)
    saved = await stack.api.put(f"/v1/canvases/{canvas_id}", json=BOARD)
    read = await stack.api.get(f"/v1/canvases/{canvas_id}")
    listing = await stack.api.get("/v1/canvases")

    assert saved.status_code == 200, saved.text
    board = read.json()
    assert board["name"] == "Harbour studies" and board["viewport"] == {"x": 12, "y": -40, "zoom": 0.8}
    assert [(node["id"], node["position"], node["data"]) for node in board["nodes"]] == [
        ("a", {"x": 0, "y": 0}, {"prompt": "a harbour", "size": "512x512"}),
        ("b", {"x": 420.5, "y": 60}, {"prompt": "at night"}),
    ]
    assert board["edges"] == [
        {
            "id": "a-b",
            "source": "a",
            "target": "b",
            "sourceHandle": None,
            "targetHandle": None,
            "type": None,
            "data": {},
        }
    ]
    summary = next(item for item in listing.json()["items"] if item["id"] == canvas_id)
    assert (summary["name"], summary["nodeCount"]) == ("Harbour studies", 2)


async def test_a_save_deletes_missing_nodes_and_keeps_what_jobs_wrote(stack: Stack) -> None:
    canvas_id = await new_canvas(stack)
    await stack.api.put(f"/v1/canvases/{canvas_id}", json=BOARD)
    record = await stack.wait((await stack.start("a harbour", workflowId=canvas_id, nodeId="a"))["jobId"])
    only_a = {
        "nodes": [
            {
                "id": "a",
                "position": {"x": 5, "y": 5},
                "data": {"prompt": "edited", "imageUrl": "https://x.example/y.png"},
            }
        ],
        "edges": [],
    }
    saved = await stack.api.put(f"/v1/canvases/{canvas_id}", json=only_a)

    (node,) = saved.json()["nodes"]
    assert saved.json()["edges"] == []
    assert node["data"]["prompt"] == "edited" and node["position"] == {"x": 5, "y": 5}
    assert node["data"]["imageUrl"] == record["imageUrl"]  # the job's, not the save's
    assert node["data"]["status"] == "completed" and node["data"]["jobId"] == record["jobId"]


async def test_boards_that_cannot_be_are_refused(stack: Stack) -> None:
    canvas_id = await new_canvas(stack)
    dangling = {**BOARD, "edges": [{"id": "x", "source": "a", "target": "ghost"}]}
    twice = {**BOARD, "nodes": [BOARD["nodes"][0], BOARD["nodes"][0]], "edges": []}
    for board, words in ((dangling, "not on the board"), (twice, "unique")):
        answer = await stack.api.put(f"/v1/canvases/{canvas_id}", json=board)
        assert answer.status_code == 422, answer.text
        assert words in answer.json()["message"]
    assert (await stack.api.get("/v1/canvases/canvas-nobody")).status_code == 404
    assert (await stack.api.put("/v1/canvases/..", json=BOARD)).status_code in (404, 422)


async def test_a_save_tells_open_streams_to_reload_the_board(stack: Stack) -> None:
    canvas_id = await new_canvas(stack)
    async with subscribed(stack.api, f"/v1/canvases/{canvas_id}/events") as events:
        saved = await stack.api.put(f"/v1/canvases/{canvas_id}", json=BOARD)

        async def first_board_event() -> dict[str, Any]:
            async for event in events:
                if event.event == "board":
                    return dict(json.loads(event.data))
            raise AssertionError("the stream ended without a board event")

        received = await asyncio.wait_for(first_board_event(), timeout=10)
    assert received == {"version": saved.json()["version"]}


async def test_jobs_can_be_searched_by_prompt_text_taken_literally(stack: Stack) -> None:
    canvas_id = await new_canvas(stack)
    for prompt in ("A Red Barn at dawn", "a blue barn", "100% pure_sky"):
        await stack.start(prompt, workflowId=canvas_id, nodeId=f"n{len(prompt)}")

    async def found(q: str) -> list[str]:
        answer = await stack.api.get("/v1/jobs", params={"workflowId": canvas_id, "q": q})
        assert answer.status_code == 200, answer.text
        return sorted(item["promptSpec"]["basePrompt"] for item in answer.json()["items"])

    assert await found("barn") == ["A Red Barn at dawn", "a blue barn"]
    assert await found("red BARN") == ["A Red Barn at dawn"]
    assert await found("%") == ["100% pure_sky"]  # not a wildcard
    assert await found("d_b") == []  # `_` is not a wildcard either (it would match "Red Barn")


def png_bytes(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload_ticket(stack: Stack, size: int) -> tuple[str, str]:
    ticket = await stack.api.post("/v1/uploads", json={"contentType": "image/png", "bytes": size})
    assert ticket.status_code == 201, ticket.text
    return ticket.json()["uploadUrl"], ticket.json()["fileUrl"]


async def test_an_upload_url_takes_the_announced_image_and_refuses_anything_else(stack: Stack) -> None:
    png = png_bytes()
    upload_url, file_url = await upload_ticket(stack, len(png))

    async with httpx.AsyncClient(timeout=10) as browser:  # no API key: the URL is the credential
        wrong_type = await browser.put(upload_url, content=b"<html>" + b"x" * (len(png) - 6))
        too_long = await browser.put(upload_url, content=png + b"more" * 100)
        forged = await browser.put(upload_url.replace("token=", "token=0"), content=png)
        taken = await browser.put(upload_url, content=png)
        served = await browser.get(file_url)

    assert (wrong_type.status_code, wrong_type.json()["code"]) == (415, "not_the_announced_image")
    assert (too_long.status_code, too_long.json()["code"]) == (413, "payload_too_large")
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_upload_url")
    assert taken.status_code == 204
    assert served.status_code == 200 and served.content == png
    assert served.headers["x-content-type-options"] == "nosniff"
    refused = await stack.api.post("/v1/uploads", json={"contentType": "text/html", "bytes": 10})
    assert refused.status_code == 422


async def test_an_upload_url_works_once_and_takes_only_one_whole_image_within_the_pixel_budget(stack: Stack) -> None:
    png = png_bytes()
    polyglot = png + b"<html><script>alert(document.cookie)</script></html>"
    # A 13000x13000 PNG is small when its pixels are all zero; its header alone says what decoding it would cost.
    bomb = io.BytesIO()
    Image.new("1", (13000, 13000)).save(bomb, format="PNG")
    cases = {"truncated": png[:16], "polyglot": polyglot, "bomb": bomb.getvalue()}
    async with httpx.AsyncClient(timeout=30) as browser:
        refused = {}
        for name, content in cases.items():
            url, _ = await upload_ticket(stack, len(content))
            refused[name] = await browser.put(url, content=content)
        url, file_url = await upload_ticket(stack, len(png))
        first = await browser.put(url, content=png)
        second = await browser.put(url, content=png_bytes(4, 4))
        served = await browser.get(file_url)

    for name, answer in refused.items():
        assert answer.status_code == 415, (name, answer.text)
    assert refused["bomb"].json()["code"] == "image_too_large"
    assert "megapixel" in refused["bomb"].json()["message"]
    assert first.status_code == 204
    assert (second.status_code, second.json()["code"]) == (409, "upload_url_used")
    assert served.content == png, "a second PUT replaced a file served as immutable"


async def test_a_canvas_is_renamed_and_an_unknown_one_is_404(stack: Stack) -> None:
    saved = await stack.api.put("/v1/canvases/c-rename", json=BOARD)
    assert saved.status_code == 200, saved.text
    job = await stack.start("made through the API", workflowId="c-implicit-rename")
    await stack.wait(job["jobId"])

    renamed = await stack.api.patch("/v1/canvases/c-rename", json={"name": "Harbour, final"})
    implicit = await stack.api.patch("/v1/canvases/c-implicit-rename", json={"name": "From the API"})
    unknown = await stack.api.patch("/v1/canvases/c-nowhere", json={"name": "x"})
    empty = await stack.api.patch("/v1/canvases/c-rename", json={"name": ""})
    listed = {item["id"]: item["name"] for item in (await stack.api.get("/v1/canvases")).json()["items"]}

    assert renamed.status_code == 200 and renamed.json()["name"] == "Harbour, final"
    assert renamed.json()["version"] > saved.json()["version"]
    assert [node["id"] for node in renamed.json()["nodes"]] == ["a", "b"]
    assert implicit.status_code == 200 and implicit.json()["name"] == "From the API"
    assert (unknown.status_code, unknown.json()["code"]) == (404, "canvas_not_found")
    assert empty.status_code == 422
    assert (listed["c-rename"], listed["c-implicit-rename"]) == ("Harbour, final", "From the API")


async def test_deleting_a_canvas_cancels_its_running_job_answers_404_after_and_keeps_the_images(
    stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=0)
    async with running_stack(settings, temporal_client) as stack:
        done = await stack.wait((await stack.start("finished first", workflowId="c-delete"))["jobId"])
    slow = make_settings(settings, LOCAL_PROVIDER_DELAY_MS=20_000)
    async with running_stack(slow, temporal_client) as stack:
        running = await stack.start("still drawing", workflowId="c-delete", nodeId="node-2")
        await stack.wait(running["jobId"], statuses=("running",))

        deleted = await stack.api.delete("/v1/canvases/c-delete")
        after = await stack.api.get("/v1/canvases/c-delete")
        again = await stack.api.delete("/v1/canvases/c-delete")
        cancelled = await stack.wait(running["jobId"])
        image = await stack.api.get(done["imageUrl"])
        listed = [item["id"] for item in (await stack.api.get("/v1/canvases")).json()["items"]]

    assert deleted.status_code == 204, deleted.text
    assert (after.status_code, after.json()["code"]) == (404, "canvas_not_found")
    assert again.status_code == 404
    assert was_cancelled(cancelled)
    assert image.status_code == 200, "the images stay in storage"
    assert "c-delete" not in listed


async def test_the_canvas_list_shows_pictures_and_marks_canvases_made_by_api_jobs(stack: Stack) -> None:
    await stack.api.put("/v1/canvases/c-listed", json=BOARD)
    made = await stack.wait((await stack.start("a board picture", workflowId="c-listed", nodeId="a"))["jobId"])
    implicit = await stack.wait((await stack.start("from a script", workflowId="c-listed-implicit"))["jobId"])
    listed = {item["id"]: item for item in (await stack.api.get("/v1/canvases")).json()["items"]}
    assert listed["c-listed"]["implicit"] is False and listed["c-listed-implicit"]["implicit"] is True
    assert listed["c-listed"]["thumbnails"] == [made["thumbnailUrl"]]
    assert listed["c-listed-implicit"]["thumbnails"] == [implicit["thumbnailUrl"]]
    # Renaming a canvas jobs made turns it into a board of its own.
    await stack.api.patch("/v1/canvases/c-listed-implicit", json={"name": "Script output"})
    listed = {item["id"]: item for item in (await stack.api.get("/v1/canvases")).json()["items"]}
    assert listed["c-listed-implicit"]["implicit"] is False
    assert listed["c-listed-implicit"]["name"] == "Script output"


async def test_nodes_made_by_api_jobs_land_on_a_grid_beside_the_boards_nodes(stack: Stack) -> None:
    saved = {"nodes": [{"id": "drawn", "type": "image_generation", "position": {"x": 40, "y": 60}, "data": {}}]}
    assert (await stack.api.put("/v1/canvases/c-grid", json=saved)).status_code == 200
    started = await asyncio.gather(
        *(stack.start(f"picture {index}", workflowId="c-grid", nodeId=f"api-{index}") for index in range(6))
    )
    again = await stack.start("picture 0, again", workflowId="c-grid", nodeId="api-0")  # an existing node stays
    await asyncio.gather(*(stack.wait(job["jobId"]) for job in (*started, again)))
    nodes = {node["id"]: node["position"] for node in (await stack.api.get("/v1/canvases/c-grid")).json()["nodes"]}
    assert nodes["drawn"] == {"x": 40, "y": 60}
    placed = [nodes[f"api-{index}"] for index in range(6)]
    assert all(position["x"] >= 40 + 240 for position in placed), placed  # right of the board's own node
    for index, first in enumerate(placed):
        for second in placed[index + 1 :]:
            apart = max(abs(first["x"] - second["x"]), abs(first["y"] - second["y"]))
            assert apart >= 200, (first, second)
