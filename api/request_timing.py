"""How long the API takes to answer, by route: the operator's view of what a client (or a provider sending a storm
of webhooks) waits for, measured inside the process, so a slow answer can be told from a slow network or client.

The clock starts when the application receives the request (time it waited in the socket for the event loop is
not in it) and stops when the answer starts (its status and headers are sent): for an event stream that is when
it opens, not when it ends. A route is labelled by its template (`/v1/jobs/{jobId}`), never by an id.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import REQUEST_SECONDS

# Requests no route took (static files, the canvas app, 404s): one label, so a scanner cannot grow the series.
UNROUTED = "other"


class RequestTiming:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, timed(scope, send) if scope["type"] == "http" else send)


def timed(scope: Scope, send: Send) -> Send:
    """`send`, observing the time from now until the answer starts under the route that took the request."""
    began = time.perf_counter()

    async def timed_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            route = getattr(scope.get("route"), "path", None) or UNROUTED
            REQUEST_SECONDS.labels(scope["method"], route, str(message["status"])).observe(time.perf_counter() - began)
        await send(message)

    return timed_send
