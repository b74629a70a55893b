"""X-Request-ID: a caller's id is honoured (when it is a sane token), one is made otherwise; it is returned on the
answer and carried by every line logged while the request is served (core/logs.py)."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.logs import log_context

HEADER = b"x-request-id"
# A caller's id goes into logs and back into a header: printable, short, no spaces.
ACCEPTABLE = re.compile(rb"^[A-Za-z0-9._:@/+=-]{1,128}$")


class RequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(HEADER, b"")
        request_id = given if ACCEPTABLE.match(given) else uuid.uuid4().hex.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, request_id)]
            await send(message)

        with log_context(requestId=request_id.decode()):
            await self.app(scope, receive, send_with_id)
