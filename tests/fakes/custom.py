"""The `custom` provider's fake: the reference server of examples/custom_server.py itself, with every request
recorded, so the tests show that the server we hand to model-server authors works with the adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from examples.custom_server import ServerOptions, create_app
from tests.fakes.server import RecordedRequest, Recorder

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CUSTOM_WEBHOOK_SECRET = "custom-server-secret"


class RecordingApp:
    """The reference server behind a recorder of method, path, query, headers and body."""

    def __init__(self, options: ServerOptions, recorder: Recorder | None = None) -> None:
        self.recorder = recorder or Recorder()
        self._app = create_app(options)

    def requests(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [
            request
            for request in self.recorder.requests
            if request.method == method and request.path.startswith(path_prefix)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.recorder.requests.append(
            RecordedRequest(
                method=scope["method"],
                path=scope["path"],
                query=dict(pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair),
                headers={key.decode(): value.decode() for key, value in scope["headers"]},
                body=body,
            )
        )

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # waits for the client to hang up, as the server's own receive does
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._app(scope, replay, send)


def custom_fake(
    *,
    webhooks: bool = True,
    inline_images: bool = False,
    step_seconds: float = 0.2,
    recorder: Recorder | None = None,
) -> RecordingApp:
    secret = CUSTOM_WEBHOOK_SECRET if webhooks else None
    options = ServerOptions(webhook_secret=secret, inline_images=inline_images, step_seconds=step_seconds)
    return RecordingApp(options, recorder)
