"""The API serves the canvas app and its own docs with no internet: local assets only, deep links, and a page
that says how to build the app when there is no build."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from fastapi import FastAPI

from api.web import install_web
from tests.fixtures.stack import Stack


async def test_docs_load_swagger_ui_from_this_server(stack: Stack) -> None:
    page = await stack.api.get("/docs")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(asset.startswith("/docs-assets/") for asset in assets), assets
    for asset in assets:
        loaded = await stack.api.get(asset)
        assert loaded.status_code == 200 and loaded.content, asset
    assert (await stack.api.get("/openapi.json")).status_code == 200


async def test_app_paths_serve_the_app_and_api_paths_stay_the_apis(stack: Stack) -> None:
    home, deep = await stack.api.get("/"), await stack.api.get("/canvases/canvas-abc123")
    assert home.status_code == deep.status_code == 200
    assert home.text == deep.text and '<div id="root">' in home.text
    script = re.search(r'src="(/assets/[^"]+\.js)"', home.text)
    assert script, home.text
    assert (await stack.api.get(script.group(1))).status_code == 200
    missing = await stack.api.get("/v1/no-such-route")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_without_a_build_the_app_page_says_how_to_make_one(tmp_path: Path) -> None:
    app = FastAPI()
    install_web(app, dist=tmp_path / "dist")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        page = await client.get("/canvases/anything")
    assert page.status_code == 200 and "make web" in page.text
