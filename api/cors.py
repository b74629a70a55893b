"""CORS for browser canvases on other origins (CORS_ORIGINS), with refusals in our JSON error shape.

Starlette's middleware refuses a preflight with text/plain "Disallowed CORS origin"; a caller reading our errors
expects `{code, message}` and a hint of what to change.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

ALLOWED_METHODS = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
ALLOWED_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"]


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware; a refused preflight answers 400 `cors_refused` as JSON."""

    def __init__(self, app: ASGIApp, *, origins: list[str]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=["Idempotent-Replayed", "Retry-After"],
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode(errors="replace").removeprefix("Disallowed CORS ")
        message = (
            f"This cross-origin request is not allowed: its {refused} is not accepted here. Allowed origins come from"
            " CORS_ORIGINS; methods: " + ", ".join(ALLOWED_METHODS) + "; headers: " + ", ".join(ALLOWED_HEADERS) + "."
        )
        headers = {name: value for name, value in response.headers.items() if name.lower() != "content-length"}
        headers.pop("content-type", None)
        return JSONResponse({"code": "cors_refused", "message": message}, status_code=400, headers=headers)
