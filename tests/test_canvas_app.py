"""The canvas app in a real browser (Debian's Chromium through Playwright), against the real stack.

The app is the build in web/dist (`make test` builds it first); each test reads like a person using the board.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from PIL import Image
from playwright.async_api import Browser, Page, Route, async_playwright, expect
from temporalio.client import Client

from api.web import WEB_DIST
from core.config import Settings
from tests.fakes.app import FakeProviders
from tests.fakes.app_receiver import app_receiver
from tests.fakes.openai import OPENAI
from tests.fixtures.stack import Stack, make_settings, running_stack, was_cancelled
from tests.helpers import eventually

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LIVE = 15_000  # ms: the UI follows jobs live; generous for a loaded CI machine


@pytest.fixture(scope="session")
def built_app() -> None:
    assert (WEB_DIST / "index.html").is_file(), "web/dist is missing: run `make web` (make test builds it)"


@pytest.fixture
async def browser(built_app: None) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def app_stack(stack_settings: Settings, temporal_client: Client) -> AsyncIterator[Stack]:
    # Refinement fetches the upstream image from this API's own /files, on loopback.
    settings = make_settings(stack_settings, DOWNLOAD_ALLOWLIST=["127.0.0.1"])
    async with running_stack(settings, temporal_client) as stack:
        yield stack


async def new_page(browser: Browser, stack: Stack) -> Page:
    page = await browser.new_page(base_url=stack.base_url)
    page.set_default_timeout(LIVE)
    return page


async def new_board(stack: Stack, **board: Any) -> str:
    created = await stack.api.post("/v1/canvases", json={"name": "Test board"})
    assert created.status_code == 201, created.text
    canvas_id: str = created.json()["id"]
    if board:
        saved = await stack.api.put(f"/v1/canvases/{canvas_id}", json=board)
        assert saved.status_code == 200, saved.text
    return canvas_id


async def refinement_board(stack: Stack) -> str:
    """Two image nodes, b refining a."""
    return await new_board(
        stack,
        nodes=[
            {"id": "a", "type": "image_generation", "position": {"x": 0, "y": 0}, "data": {"prompt": "a red barn"}},
            {"id": "b", "type": "image_generation", "position": {"x": 420, "y": 0}, "data": {"prompt": "at night"}},
        ],
        edges=[{"id": "a-b", "source": "a", "target": "b"}],
    )


def node_element(page: Page, node_id: str) -> Any:
    return page.locator(f'[data-node-id="{node_id}"]')


async def saved_board(stack: Stack, canvas_id: str) -> dict[str, Any]:
    answer = await stack.api.get(f"/v1/canvases/{canvas_id}")
    assert answer.status_code == 200, answer.text
    board: dict[str, Any] = answer.json()
    return board


async def test_new_canvas_add_a_node_type_a_prompt_and_generate_shows_the_thumbnail_and_its_dialog(
    browser: Browser, app_stack: Stack
) -> None:
    page = await new_page(browser, app_stack)
    requested: list[str] = []
    # Pictures of other canvases in the list may come from any storage; code and styles come from here.
    page.on("request", lambda request: request.resource_type != "image" and requested.append(request.url))
    await page.goto("/")
    await page.get_by_role("button", name="New canvas").click()
    await expect(page).to_have_url(re.compile(r"/canvases/canvas-[0-9a-f]+$"))
    await page.get_by_role("button", name="Add image node").click()
    await page.get_by_label("Prompt").fill("a lighthouse at dusk")
    await page.get_by_label("Prompt").press("Control+Enter")  # generates the node being edited

    picture = page.get_by_role("img", name="a lighthouse at dusk")
    await expect(picture).to_be_visible()
    await expect(page.locator("[data-status]")).to_have_attribute("data-status", "completed")
    await expect(page.get_by_role("button", name="Regenerate")).to_be_enabled()

    await picture.click()
    dialog = page.get_by_role("dialog", name="Full-size image")
    await expect(dialog).to_be_visible()
    await expect(dialog.get_by_role("img", name="a lighthouse at dusk")).to_be_visible()
    await expect(dialog).to_contain_text("local")
    await expect(dialog).to_contain_text("procedural")
    await expect(dialog).to_contain_text(re.compile(r"job_[0-9a-f]{32}"))
    await dialog.get_by_role("button", name="Close").click()
    await expect(dialog).to_be_hidden()
    # No remote script, font or style: everything came from this server.
    assert requested and all(url.startswith(app_stack.base_url) for url in requested), requested


async def test_a_job_started_through_the_api_shows_live_on_the_open_board(browser: Browser, app_stack: Stack) -> None:
    canvas_id = await new_board(app_stack)
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    await expect(page.get_by_role("button", name="Add image node")).to_be_enabled()

    await app_stack.start("a harbour from the API", workflowId=canvas_id, nodeId="from-api")

    await expect(node_element(page, "from-api")).to_have_attribute("data-status", "completed")
    await expect(page.get_by_role("img", name="a harbour from the API")).to_be_visible()


async def test_a_failed_job_raises_an_alert_naming_its_node_and_offers_to_show_and_retry_it(
    browser: Browser, app_stack: Stack
) -> None:
    canvas_id = await new_board(app_stack)
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    # An empty board says what to do first.
    await expect(page.get_by_role("note", name="An empty canvas")).to_contain_text("write what to draw")
    missing = f"{app_stack.base_url}/files/images/nowhere/missing.png"

    await app_stack.start(
        "refine what is not there", workflowId=canvas_id, nodeId="doomed", promptSpec={"previousImage": missing}
    )

    await expect(node_element(page, "doomed")).to_have_attribute("data-status", "error")
    await expect(page.get_by_role("note", name="An empty canvas")).to_have_count(0)
    alert = page.get_by_role("alert").filter(has_text="refine what is not there")
    await expect(alert).to_contain_text("“refine what is not there” failed:")
    await expect(alert).to_contain_text("missing.png")
    await expect(node_element(page, "doomed")).to_contain_text("missing.png")
    await alert.get_by_role("button", name="Show node").click()  # the toast stays, for Retry
    await expect(page.locator(".react-flow__node.selected")).to_have_attribute("data-id", "doomed")

    # History keeps a failed job's row as wide as any, though it has no picture.
    await page.get_by_role("button", name="History").click()
    row = page.get_by_role("list", name="Jobs").get_by_role("listitem").first
    await expect(row).to_contain_text("refine what is not there")
    box = await row.locator("p").first.bounding_box()
    assert box is not None and box["width"] > 200, box

    # Retry generates the node again from what it holds now (its prompt; this node refines nothing on the board).
    await alert.get_by_role("button", name="Retry").click()
    await expect(alert).to_have_count(0)
    await expect(node_element(page, "doomed")).to_have_attribute("data-status", "completed")


async def test_cancel_stops_a_running_job(browser: Browser, stack_settings: Settings, temporal_client: Client) -> None:
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=20_000)
    async with running_stack(settings, temporal_client) as stack:
        canvas_id = await new_board(
            stack, nodes=[{"id": "slow", "type": "image_generation", "data": {"prompt": "a slow sunrise"}}]
        )
        page = await new_page(browser, stack)
        await page.goto(f"/canvases/{canvas_id}")
        await page.get_by_role("button", name="Generate").click()
        await expect(page.get_by_role("progressbar", name="Progress")).to_be_visible()
        # The node's clock keeps moving whatever the provider reports.
        elapsed = node_element(page, "slow").get_by_test_id("elapsed")
        await expect(elapsed).to_have_text(re.compile(r"^0:\d\d$"))
        shown = await elapsed.inner_text()
        await expect(elapsed).not_to_have_text(shown, timeout=3000)
        await page.get_by_role("button", name="Cancel").click()
        # As before the job: a node that never had an image has no status again.
        await expect(node_element(page, "slow")).to_have_attribute("data-status", "idle")
        (job,) = (await stack.api.get("/v1/jobs", params={"workflowId": canvas_id})).json()["items"]
        assert was_cancelled(await stack.wait(job["jobId"]))


async def test_a_job_held_back_by_the_workspaces_cap_shows_in_line_until_it_runs(
    browser: Browser, stack_settings: Settings, temporal_client: Client
) -> None:
    # Each job takes 4 s: the second must come while the first still runs, however late the page sees it run.
    settings = make_settings(stack_settings, ADMIN_API_KEY="admin-key", LOCAL_PROVIDER_DELAY_MS=4000)
    async with running_stack(settings, temporal_client) as stack:
        # A tenant of its own, capped at one job at a time: no other test's jobs count against its cap.
        admin = {"Authorization": "Bearer admin-key"}
        tenant = (await stack.api.post("/v1/tenants", json={"name": "Capped"}, headers=admin)).json()["id"]
        capped = await stack.api.patch(f"/v1/tenants/{tenant}", json={"maxConcurrentJobs": 1}, headers=admin)
        assert capped.status_code == 200, capped.text
        key = (await stack.api.post(f"/v1/tenants/{tenant}/keys", json={}, headers=admin)).json()["key"]
        stack.api.headers["Authorization"] = f"Bearer {key}"
        canvas_id = await new_board(stack)
        # The page's usual time for the model comes from the completed jobs it may see.
        done = await stack.start("a first sunrise", workflowId=canvas_id, nodeId="first")
        assert (await stack.wait(done["jobId"]))["status"] == "completed"
        page = await new_page(browser, stack)
        await page.goto(f"/canvases/{canvas_id}")
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Use key").click()
        await expect(page.get_by_role("button", name="Add image node")).to_be_enabled()

        await stack.start("the first of two", workflowId=canvas_id, nodeId="first")
        await expect(node_element(page, "first")).to_have_attribute("data-status", "running")
        await stack.start("the second of two", workflowId=canvas_id, nodeId="second")

        second = node_element(page, "second")
        await expect(second.get_by_text("in line", exact=True)).to_be_visible()
        await expect(second.get_by_text("Waiting for a free slot…")).to_be_visible()
        await expect(second.get_by_role("progressbar")).to_have_count(0)
        await expect(second.get_by_test_id("elapsed")).to_be_visible()  # how long it has waited
        await expect(second.locator(".elapsed .hint")).to_have_count(0)  # and no usual time to wait for
        await expect(second).to_have_attribute("data-status", "running")
        await expect(second.get_by_text("in line", exact=True)).to_have_count(0)
        await expect(second.locator(".elapsed .hint")).to_have_text(re.compile(r"usually ~\d+ s"))
        await expect(second).to_have_attribute("data-status", "completed")


async def test_from_afar_a_running_node_shows_its_clock_and_usual_time_large_enough_to_read(
    browser: Browser, stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, LOCAL_PROVIDER_DELAY_MS=5000)
    async with running_stack(settings, temporal_client) as stack:
        done = await stack.start("a first sunrise")  # the model's usual time comes from the day's completed jobs
        assert (await stack.wait(done["jobId"]))["status"] == "completed"
        canvas_id = await new_board(
            stack, nodes=[{"id": "slow", "type": "image_generation", "data": {"prompt": "a slow sunrise"}}]
        )
        page = await new_page(browser, stack)
        await page.set_viewport_size({"width": 1280, "height": 720})
        await page.goto(f"/canvases/{canvas_id}")
        await page.get_by_role("button", name="Generate").click()
        node = node_element(page, "slow")
        for _ in range(10):  # out until the node is drawn from afar (semantic zoom)
            if await node.get_attribute("data-zoom") == "far":
                break
            await page.get_by_role("button", name="Zoom Out").click()
        await expect(node).to_have_attribute("data-zoom", "far")
        hint = node.locator(".elapsed .hint")
        await expect(hint).to_have_text(re.compile(r"^usually ~\d+ s$"), use_inner_text=True)  # as shown
        clock = await node.get_by_test_id("elapsed").bounding_box()
        usual = await hint.bounding_box()

    assert clock is not None and usual is not None
    # On screen, not in the node's own units: at this zoom a fixed 0.8rem drew the hint in a line 8.7 px high, its
    # letters too small to read; now the line is 15 px.
    assert usual["height"] >= 12, usual
    assert usual["y"] >= clock["y"] + clock["height"] - 1, "the usual time goes under the clock"


async def test_a_board_made_through_the_api_opens_with_all_its_nodes_in_view(
    browser: Browser, app_stack: Stack
) -> None:
    grid = [(column, row) for row in range(3) for column in range(4)]
    nodes = [
        {"id": f"n{index}", "type": "image_generation", "position": {"x": 420 * column, "y": 380 * row}, "data": {}}
        for index, (column, row) in enumerate(grid)
    ]
    canvas_id = await new_board(app_stack, nodes=nodes)
    page = await browser.new_page(base_url=app_stack.base_url, viewport={"width": 1280, "height": 720})
    page.set_default_timeout(LIVE)
    await page.goto(f"/canvases/{canvas_id}")

    async def all_in_view() -> bool:
        boxes = [await node_element(page, node["id"]).bounding_box() for node in nodes]
        return all(
            box
            and box["x"] >= 0
            and box["y"] >= 0
            and box["x"] + box["width"] <= 1280
            and box["y"] + box["height"] <= 720
            for box in boxes
        )

    await eventually(all_in_view, what="every node of the board in view")


async def test_a_board_opens_with_the_view_it_was_saved_with(browser: Browser, app_stack: Stack) -> None:
    node = {"id": "a", "type": "image_generation", "position": {"x": 0, "y": 0}, "data": {}}
    canvas_id = await new_board(app_stack, nodes=[node], viewport={"x": 120, "y": 60, "zoom": 0.5})
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    await expect(page.locator(".react-flow__viewport")).to_have_attribute(
        "style", re.compile(r"translate\(120px, 60px\) scale\(0\.5\)")
    )


async def test_a_reload_keeps_nodes_edges_and_positions(browser: Browser, app_stack: Stack) -> None:
    canvas_id = await new_board(
        app_stack,
        nodes=[
            {"id": "a", "type": "image_generation", "position": {"x": 0, "y": 0}, "data": {"prompt": "first"}},
            {"id": "b", "type": "image_generation", "position": {"x": 420, "y": 60}, "data": {"prompt": "second"}},
        ],
        edges=[{"id": "a-b", "source": "a", "target": "b"}],
    )
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    await page.get_by_role("button", name="Add image node").click()
    await page.get_by_label("Prompt").last.fill("third, added in the browser")

    # The board saves itself (debounced); wait until the API has it.
    async def saved_with_the_new_node() -> dict[str, Any] | None:
        board = await saved_board(app_stack, canvas_id)
        added = any(node["data"].get("prompt") == "third, added in the browser" for node in board["nodes"])
        return board if added else None

    board = await eventually(saved_with_the_new_node, what="the board saved with the node added in the browser")
    positions = {node["id"]: node["position"] for node in board["nodes"]}

    await page.reload()
    await expect(page.locator("[data-node-id]")).to_have_count(3)
    await expect(page.locator(".react-flow__edge")).to_have_count(1)
    await expect(page.get_by_label("Prompt").last).to_have_value("third, added in the browser")
    after = await saved_board(app_stack, canvas_id)
    assert {node["id"]: node["position"] for node in after["nodes"]} == positions
    assert positions["b"] == {"x": 420, "y": 60}


async def test_two_tabs_see_each_others_changes(browser: Browser, app_stack: Stack) -> None:
    canvas_id = await new_board(app_stack)
    first, second = await new_page(browser, app_stack), await new_page(browser, app_stack)
    for page in (first, second):
        await page.goto(f"/canvases/{canvas_id}")
        await expect(page.get_by_role("button", name="Add image node")).to_be_enabled()

    await first.get_by_role("button", name="Add image node").click()
    await first.get_by_label("Prompt").fill("typed in the first tab")

    await expect(second.get_by_label("Prompt")).to_have_value("typed in the first tab")
    await second.get_by_role("button", name="Generate").click()
    await expect(first.get_by_role("img", name="typed in the first tab")).to_be_visible()


async def test_a_node_added_while_another_client_saves_the_board_keeps_both(browser: Browser, app_stack: Stack) -> None:
    """The tab's save meets a newer version (409): it merges the other client's node in and saves again."""
    canvas_id = await new_board(
        app_stack, nodes=[{"id": "a", "type": "image_generation", "position": {"x": 0, "y": 0}, "data": {}}]
    )
    page = await new_page(browser, app_stack)
    saves: list[int] = []
    page.on("response", lambda response: saves.append(response.status) if response.request.method == "PUT" else None)
    theirs_saved = asyncio.Event()

    async def after_theirs(route: Route) -> None:
        # The tab's first save waits until the other client's is in, so it always meets the newer version.
        if route.request.method == "PUT":
            await theirs_saved.wait()
        await route.continue_()

    await page.route(f"**/v1/canvases/{canvas_id}", after_theirs)
    await page.goto(f"/canvases/{canvas_id}")
    await expect(node_element(page, "a")).to_be_visible()

    await page.get_by_role("button", name="Add image node").click()  # saved a moment later, from the old version
    read = await saved_board(app_stack, canvas_id)
    theirs = {"id": "theirs", "type": "image_generation", "position": {"x": 0, "y": 600}, "data": {}}
    saved = await app_stack.api.put(
        f"/v1/canvases/{canvas_id}", json={"nodes": [*read["nodes"], theirs], "edges": [], "version": read["version"]}
    )
    assert saved.status_code == 200, saved.text
    theirs_saved.set()

    await expect(node_element(page, "theirs")).to_be_visible()
    await expect(page.locator(".react-flow__node")).to_have_count(3)

    async def both_kept() -> bool:
        ids = {node["id"] for node in (await saved_board(app_stack, canvas_id))["nodes"]}
        return len(ids) == 3 and {"a", "theirs"} <= ids

    await eventually(both_kept, what="the saved board keeping both tabs' nodes", timeout=10)
    # The server has the board a moment before the browser has the answer to the save that wrote it.
    await eventually(lambda: len(saves) >= 2, what="the answer to the merged save", timeout=10)
    assert saves[:1] == [409] and saves[-1] == 200, saves  # the merge happened, and its save went through


async def test_an_edge_makes_the_target_refine_the_sources_image(browser: Browser, app_stack: Stack) -> None:
    canvas_id = await refinement_board(app_stack)
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    await node_element(page, "a").get_by_role("button", name="Generate").click()
    await expect(node_element(page, "a")).to_have_attribute("data-status", "completed")
    await node_element(page, "b").get_by_role("button", name="Generate").click()
    await expect(node_element(page, "b")).to_have_attribute("data-status", "completed")

    nodes = {node["id"]: node["data"] for node in (await saved_board(app_stack, canvas_id))["nodes"]}
    refined = await app_stack.job(nodes["b"]["jobId"])
    assert refined["promptSpec"]["previousImage"] == nodes["a"]["imageUrl"]
    assert nodes["b"]["imageUrl"] != nodes["a"]["imageUrl"]


async def test_with_api_keys_the_app_asks_for_a_key_and_says_when_it_is_wrong(
    browser: Browser, stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(stack_settings, API_KEYS=["board-key"])
    async with running_stack(settings, temporal_client) as stack:
        page = await new_page(browser, stack)
        await page.goto("/")
        await page.get_by_label("API key").fill("wrong-key")
        await page.get_by_role("button", name="Use key").click()
        await expect(page.get_by_role("status")).to_contain_text("refused")
        await page.get_by_label("API key").fill("board-key")
        await page.get_by_role("button", name="Use key").click()
        await page.get_by_role("button", name="New canvas").click()
        await page.get_by_role("button", name="Add image node").click()
        await page.get_by_label("Prompt").fill("behind a key")
        await page.get_by_role("button", name="Generate").click()
        # The board and its live stream work through a canvas token minted from the key.
        await expect(page.get_by_role("img", name="behind a key")).to_be_visible()
        stored = await page.evaluate("() => JSON.stringify([{ ...sessionStorage }, { ...localStorage }])")
        assert "board-key" not in stored and "ct1." in stored, "the key was stored, or the token was not"
        # A reload keeps the board (its token) without asking for the key again.
        await page.reload()
        await expect(page.get_by_role("img", name="behind a key")).to_be_visible()
        await expect(page.get_by_label("API key")).to_have_count(0)


async def test_the_history_panel_lists_filters_and_searches_the_boards_jobs(browser: Browser, app_stack: Stack) -> None:
    canvas_id = await new_board(app_stack)
    for node, prompt in (("n1", "a red barn"), ("n2", "a blue boat")):
        await app_stack.wait((await app_stack.start(prompt, workflowId=canvas_id, nodeId=node))["jobId"])
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    await page.get_by_role("button", name="History").click()

    history = page.get_by_role("complementary", name="History")
    jobs = history.get_by_role("list", name="Jobs").get_by_role("listitem")
    await expect(jobs).to_have_count(2)
    await expect(history.get_by_label("Stats")).to_contain_text("completed 2")
    await history.get_by_label("Search prompts").fill("boat")
    await expect(jobs).to_have_count(1)
    await expect(jobs.first).to_contain_text("a blue boat")
    await history.get_by_label("Status").select_option("failed")
    await expect(jobs).to_have_count(0)
    await expect(history.get_by_role("status")).to_contain_text("No job of this board matches")


def small_png() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 40, 40)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PASTE = """async (encoded) => {
    const bytes = Uint8Array.from(atob(encoded), (char) => char.charCodeAt(0));
    const clipboard = new DataTransfer();
    clipboard.items.add(new File([bytes], "sketch.png", { type: "image/png" }));
    document.dispatchEvent(new ClipboardEvent("paste", { clipboardData: clipboard, bubbles: true }));
}"""


async def test_a_pasted_image_becomes_a_node_that_feeds_a_refinement(browser: Browser, app_stack: Stack) -> None:
    refine = {"id": "b", "type": "image_generation", "position": {"x": 500, "y": 0}, "data": {"prompt": "by night"}}
    canvas_id = await new_board(app_stack, nodes=[refine], viewport={"x": 0, "y": 0, "zoom": 1})
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    await expect(page.get_by_role("button", name="Add image node")).to_be_enabled()

    await page.evaluate(PASTE, small_png())
    await expect(page.get_by_role("img", name="sketch.png")).to_be_visible()
    pasted = page.locator('[data-node-id^="node-"]')
    await pasted.locator(".react-flow__handle-right").drag_to(
        node_element(page, "b").locator(".react-flow__handle-left")
    )
    await expect(page.locator(".react-flow__edge")).to_have_count(1)
    await node_element(page, "b").get_by_role("button", name="Generate").click()
    await expect(node_element(page, "b")).to_have_attribute("data-status", "completed")

    nodes = {node["id"]: node for node in (await saved_board(app_stack, canvas_id))["nodes"]}
    (uploaded,) = [node for node in nodes.values() if node["type"] == "image"]
    assert uploaded["data"]["sourceUrl"].startswith(f"{app_stack.base_url}/files/uploads/")
    refined = await app_stack.job(nodes["b"]["data"]["jobId"])
    assert refined["promptSpec"]["previousImage"] == uploaded["data"]["sourceUrl"]


async def test_run_all_says_what_it_will_generate_and_a_second_run_reuses_what_did_not_change(
    browser: Browser, app_stack: Stack
) -> None:
    canvas_id = await refinement_board(app_stack)
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    await page.get_by_role("button", name="Run all").click()
    preview = page.get_by_role("dialog", name="Run all")
    await expect(preview.get_by_role("status")).to_have_text("2 to generate · 0 cached · free")
    await preview.get_by_role("button", name="Run 2 nodes").click()
    status = page.get_by_role("status").filter(has_text="Run")
    await expect(status).to_have_attribute("data-run-status", "completed")
    await expect(status).to_contain_text("2/2 nodes done")
    for node_id in ("a", "b"):
        await expect(node_element(page, node_id)).to_have_attribute("data-status", "completed")
        await expect(node_element(page, node_id).locator("img").first).to_be_visible()
    first_jobs = {node["id"]: node["data"]["jobId"] for node in (await saved_board(app_stack, canvas_id))["nodes"]}

    # Nothing changed: the preview says so and offers only to regenerate.
    await node_element(page, "a").get_by_role("button", name="Run from here").click()
    preview = page.get_by_role("dialog", name="Run from this node")
    await expect(preview.get_by_role("status")).to_have_text("0 to generate · 2 cached")
    await expect(preview.get_by_role("button", name="Regenerate all 2")).to_be_visible()
    await page.keyboard.press("Escape")
    await expect(preview).to_be_hidden()

    await node_element(page, "b").get_by_label("Prompt").fill("at night, in fog")
    await page.get_by_role("button", name="Run all").click()
    preview = page.get_by_role("dialog", name="Run all")
    await expect(preview.get_by_role("status")).to_have_text("1 to generate · 1 cached · free")
    await preview.get_by_role("button", name="Run 1 node").click()
    await expect(node_element(page, "a").locator(".badge-run-cached")).to_have_text("cached")
    await expect(status).to_contain_text("2/2 nodes done")
    nodes = {node["id"]: node["data"] for node in (await saved_board(app_stack, canvas_id))["nodes"]}
    assert nodes["a"]["jobId"] == first_jobs["a"] and nodes["b"]["jobId"] != first_jobs["b"]
    refined = await app_stack.job(nodes["b"]["jobId"])
    assert refined["promptSpec"]["previousImage"] == nodes["a"]["imageUrl"]
    assert refined["promptSpec"]["basePrompt"] == "at night, in fog"


async def test_the_operator_view_shows_endpoints_and_their_failures_and_sends_one_again(
    browser: Browser, stack_settings: Settings, temporal_client: Client
) -> None:
    settings = make_settings(
        stack_settings,
        OUTBOUND_ALLOWLIST=["127.0.0.1"],
        OUTBOUND_WEBHOOK_RETRY_SECONDS=["0"],
        LOCAL_PROVIDER_DELAY_MS=0,
    )
    async with app_receiver() as receiver, running_stack(settings, temporal_client) as stack:
        endpoint = (await stack.api.post("/v1/webhook-endpoints", json={"url": receiver.url})).json()
        receiver.answer(500)
        try:
            job = await stack.start("a failing delivery")
            await stack.wait(job["jobId"])
            path = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries?status=failed"

            async def failed_deliveries() -> list[Any]:
                return list((await stack.api.get(path)).json()["items"])

            await eventually(failed_deliveries, what="the delivery to fail", timeout=20)
            page = await new_page(browser, stack)
            await page.goto("/")
            await page.get_by_role("button", name="Operations").click()
            await expect(page).to_have_url(re.compile(r"/ops$"))
            card = page.get_by_role("listitem", name=f"Endpoint {receiver.url}")
            await expect(card).to_contain_text("failing")
            row = card.get_by_role("row").filter(has_text=job["jobId"])
            await expect(row).to_contain_text("HTTP 500")
            await row.get_by_role("button", name="Send again").click()
            await expect(page.get_by_text("Sent again")).to_be_visible()
            await eventually(lambda: len(receiver.recorder.requests) >= 2, what="the replay", timeout=20)
        finally:
            await stack.api.delete(f"/v1/webhook-endpoints/{endpoint['id']}")
    first, replayed = receiver.recorder.requests
    assert first.headers["webhook-id"] == replayed.headers["webhook-id"]


async def test_the_operator_view_shows_todays_jobs_and_each_providers_failures_429s_and_cost(
    browser: Browser, provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    flare = {"provider": "openai", "model": "gpt-image-2.5-flare", "promptSpec": {"quality": "low"}}
    throttled = {"error": {"message": "Rate limit reached.", "type": "requests", "param": None, "code": None}}
    settings = make_settings(provider_settings, LOCAL_PROVIDER_DELAY_MS=0)
    async with running_stack(settings, temporal_client) as stack:
        before = await openai_row(stack)
        fake_providers.script.queue(OPENAI, ("status", 429, throttled, {"retry-after-ms": "100"}))
        await stack.wait((await stack.start("after a 429", **flare))["jobId"])
        fake_providers.script.queue(OPENAI, "moderation")
        await stack.wait((await stack.start("refused", **flare))["jobId"])
        after = await openai_row(stack)
        assert (after["failed"], after["rateLimited"]) == (before["failed"] + 1, before["rateLimited"] + 1)

        page = await new_page(browser, stack)
        await page.goto("/ops")
        row = page.get_by_role("row", name="openai:gpt-image-2.5-flare")
        cells = row.get_by_role("cell")
        # Completed, failed, cancelled, 429s and poll timeouts, as GET /v1/stats gives them; then the cost.
        figures = [after[name] for name in ("completed", "failed", "cancelled", "rateLimited", "pollTimeouts")]
        await expect(cells.nth(0)).to_have_text(str(figures[0]))
        assert [await cells.nth(index).inner_text() for index in range(5)] == [str(value) for value in figures]
        await expect(cells.nth(6)).to_have_text(usd(after["costUsd"]))

        # The counts follow new jobs while the page stays open.
        completed = page.get_by_role("list", name="Jobs by status").get_by_role("listitem").filter(has_text="completed")
        shown = int((await completed.inner_text()).split()[0])
        await stack.wait((await stack.start("one more"))["jobId"])
        await expect(completed).to_contain_text(str(shown + 1), timeout=LIVE)


def usd(value: float) -> str:
    """As the app writes an amount (web/src/format.ts): cents to the tenth below a dollar."""
    return f"${value:.3f}" if value < 1 else f"${value:.2f}"


async def openai_row(stack: Stack) -> dict[str, Any]:
    """Today's (UTC) GET /v1/stats row for the flare model; zeros when it has none yet."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
    stats = (await stack.api.get("/v1/stats", params={"since": midnight})).json()
    rows = {(row["provider"], row["model"]): row for row in stats["providers"]}
    empty = {"completed": 0, "failed": 0, "cancelled": 0, "rateLimited": 0, "pollTimeouts": 0, "costUsd": None}
    return rows.get(("openai", "gpt-image-2.5-flare"), empty)


async def test_the_canvas_list_renames_deletes_and_hides_what_api_jobs_made(browser: Browser, app_stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:6]  # other tests' canvases share the list
    final, scratch = f"Harbour {suffix}, final", f"Scratch {suffix}"
    renamed = (await app_stack.api.post("/v1/canvases", json={"name": f"Old name {suffix}"})).json()["id"]
    doomed = (await app_stack.api.post("/v1/canvases", json={"name": scratch})).json()["id"]
    script = f"made-by-a-script-{suffix}"
    await app_stack.wait((await app_stack.start("from a script", workflowId=script))["jobId"])
    page = await new_page(browser, app_stack)
    await page.goto("/")
    script_card = page.get_by_role("listitem", name=script)
    await expect(script_card.get_by_text("from API jobs")).to_be_visible()
    await expect(script_card.locator("img")).to_have_count(1)

    await page.get_by_role("button", name=f"Rename Old name {suffix}").click()
    await page.get_by_label("Canvas name").fill(final)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("link", name=final)).to_be_visible()
    assert (await app_stack.api.get(f"/v1/canvases/{renamed}")).json()["name"] == final

    await page.get_by_role("button", name=f"Delete {scratch}").click()
    await page.get_by_role("group", name="Confirm delete").get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("listitem", name=scratch)).to_have_count(0)
    assert (await app_stack.api.get(f"/v1/canvases/{doomed}")).status_code == 404

    await page.get_by_label(re.compile(r"^Hide the \d+ canvas(es)? made only by API jobs$")).check()
    await expect(script_card).to_have_count(0)
    await page.reload()  # the choice is remembered
    await expect(page.get_by_role("listitem", name=script)).to_have_count(0)
    await expect(page.get_by_role("listitem", name=final)).to_be_visible()


async def test_added_nodes_land_in_free_space(browser: Browser, app_stack: Stack) -> None:
    canvas_id = await new_board(app_stack)
    page = await new_page(browser, app_stack)
    await page.goto(f"/canvases/{canvas_id}")
    for count in (1, 2, 3):
        await page.get_by_role("button", name="Add image node").click()
        await expect(page.locator(".react-flow__node")).to_have_count(count)
    boxes = [await node.bounding_box() for node in await page.locator(".react-flow__node").all()]
    assert all(boxes), boxes
    for index, first in enumerate(boxes):
        for second in boxes[index + 1 :]:
            assert first and second
            apart_x = first["x"] + first["width"] <= second["x"] or second["x"] + second["width"] <= first["x"]
            apart_y = first["y"] + first["height"] <= second["y"] or second["y"] + second["height"] <= first["y"]
            assert apart_x or apart_y, (first, second)

    # A selected node is clearly marked, and Backspace deletes it.
    node = page.locator(".react-flow__node").first
    await node.locator(".node-picture").click()
    await expect(node).to_have_class(re.compile(r"\bselected\b"))
    assert await node.locator(".image-node").evaluate("element => getComputedStyle(element).outlineStyle") == "solid"
    await page.keyboard.press("Backspace")
    await expect(page.locator(".react-flow__node")).to_have_count(2)
    # Cmd/Ctrl+Z brings the deleted node back, then takes back the last add; the board saves what it shows.
    await page.keyboard.press("Control+z")
    await expect(page.locator(".react-flow__node")).to_have_count(3)
    await page.keyboard.press("Control+z")
    await expect(page.locator(".react-flow__node")).to_have_count(2)

    async def two_nodes_saved() -> bool:
        return len((await saved_board(app_stack, canvas_id))["nodes"]) == 2

    await eventually(two_nodes_saved, what="the undone board to be saved")
