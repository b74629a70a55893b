"""HTTP errors: every failure answers JSON `{code, message, details?}` with a stable code.

Caller mistakes are 4xx with a message that says how to fix them; only our own faults are 5xx.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.methods import allowed_methods
from core.metrics import BASE64_REFUSALS
from models.guards import ImageDataInJson

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(Exception):
    """Raised by routes; becomes the JSON error answer."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status)


def _field_errors(error: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(part) for part in item.get("loc", ()) if part != "body"), "message": item.get("msg", "")}
        for item in error.errors()
    ]


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    if any(_is_image_data(item.get("ctx", {}).get("error")) for item in error.errors()):
        BASE64_REFUSALS.inc()
    fields = _field_errors(error)
    summary = "; ".join(f"{item['field'] or 'body'}: {item['message']}" for item in fields[:5])
    return error_response(422, "invalid_request", f"The request is invalid: {summary}", fields)


async def _api_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ApiError)
    response = error_response(error.status, error.code, error.message, error.details)
    response.headers.update(error.headers)
    return response


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 405:
        return _method_not_allowed(request)
    response = error_response(error.status_code, STATUS_CODES.get(error.status_code, "error"), str(error.detail))
    for name, value in (error.headers or {}).items():
        response.headers[name] = value
    return response


def _method_not_allowed(request: Request) -> Response:
    """OPTIONS: 204 with the path's methods; any other method the path does not take: 405 naming them."""
    allow = ", ".join(allowed_methods(request))
    if request.method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": allow})
    message = f"{request.method} is not allowed here; this path takes {allow}."
    response = error_response(405, "method_not_allowed", message)
    response.headers["Allow"] = allow
    return response


async def _database_unavailable(request: Request, error: Exception) -> JSONResponse:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, error)
    response = error_response(503, "database_unavailable", "The database is unavailable or busy; retry shortly.")
    response.headers["Retry-After"] = "5"
    return response


async def _unstorable_value(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DataError)
    reason = str(error.orig).splitlines()[0] if error.orig else "invalid value"
    message = f"A value in the request cannot be used ({reason}); text may not contain NUL characters."
    return error_response(422, "invalid_request", message)


async def _unstorable_json(request: Request, error: Exception) -> JSONResponse:
    """A request whose JSON, as it would be stored, holds image data or is too large or deep: the caller's to fix."""
    if _is_image_data(error):
        BASE64_REFUSALS.inc()
    return error_response(422, "unstorable_request", f"The request cannot be stored: {error}.")


def _is_image_data(error: object) -> bool:
    return isinstance(error, ImageDataInJson) and error.image_data


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "Something went wrong on our side; the error was logged.")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Lost or refused database connections (a restart, a failover) and a drained connection pool are an outage
    # or overload, not a bug: 503, retry later.
    for outage in (OperationalError, InterfaceError, PoolTimeoutError):
        app.add_exception_handler(outage, _database_unavailable)
    # PostgreSQL's "data exception" class: a value from the request it cannot hold (a NUL character in any text).
    app.add_exception_handler(DataError, _unstorable_value)
    # Checked again where JSON is stored (a request's fields together can look like a base64 blob or exceed 64 KiB).
    app.add_exception_handler(ImageDataInJson, _unstorable_json)
    app.add_exception_handler(Exception, _unexpected_error)
