"""The reference canvas app (web/, built into web/dist) and the API docs, both served with no internet.

Registered after the API routes, so `/v1/...`, `/files/...` and the health routes win. `/` and every app path
(`/canvases/{workflowId}`, `/ops`) answer the app's index.html and the browser router takes over; `/assets/...` are
the build's hashed files. Without a build, `/` explains how to make one. Swagger UI's own scripts and styles
come from the `swagger-ui-bundle` package instead of a CDN.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from core.db import PROJECT_ROOT

WEB_DIST = PROJECT_ROOT / "web" / "dist"
DOCS_ASSETS = "/docs-assets"

NO_BUILD_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Image Job Orchestrator</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; line-height: 1.5">
<h1>The canvas app is not built yet</h1>
<p>The API is running. To build the canvas, run <code>make web</code> (or <code>make dev</code>, which builds it
when its sources changed), then reload this page.</p>
<p>Meanwhile: <a href="/docs">the API docs</a>.</p>
</body></html>"""


def install_web(app: FastAPI, dist: Path = WEB_DIST) -> None:
    """Serve the docs offline and the canvas app (or the page saying how to build it)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    index = dist / "index.html"
    # Mounted even before a build exists, so a build made while the API runs is served without a restart.
    app.mount("/assets", StaticFiles(directory=dist / "assets", check_dir=False), name="web-assets")

    async def app_page() -> FileResponse | HTMLResponse:
        if index.is_file():
            return FileResponse(index, headers={"Cache-Control": "no-cache"})
        return HTMLResponse(NO_BUILD_PAGE)

    app.add_api_route("/", app_page, methods=["GET"], include_in_schema=False, response_model=None)
    app.add_api_route("/canvases/{workflowId}", app_page, methods=["GET"], include_in_schema=False, response_model=None)
    app.add_api_route("/ops", app_page, methods=["GET"], include_in_schema=False, response_model=None)
