"""Every fake provider in one ASGI app: the synchronous services (sync_providers) and the asynchronous ones
(async_providers) on one port, as a deployment would reach them at different hosts.

    /v1/images/generations                     OpenAI             (OPENAI_BASE_URL = {url}/v1)
    /v1beta/models/{model}:{method}            Google Gemini API  (GOOGLE_BASE_URL = {url})
    /v2beta/stable-image/generate/{engine}     Stability          (STABILITY_BASE_URL = {url})
    /v2beta/stable-image/upscale/creative      Stability async    (answers an id; the image at /v2beta/results/{id})
    /prompt/{prompt}                           Pollinations       (POLLINATIONS_BASE_URL = {url})
    /replicate/v1/...                          Replicate          (REPLICATE_BASE_URL = {url}/replicate/v1)
    /mj/...                                    midjourney-proxy   (MIDJOURNEY_BASE_URL = {url}/mj)
    /files/{name}, /outputs/{name}.png         the result URLs the answers point at

All routes share one Recorder and one Script. `ResponseMonitor` wraps the app and notes, per request, how much
of the answer was sent and whether it was sent in full (a client that refuses an oversized body hangs up
early), and can hold a route's answer back for a while (a provider slow to answer its create call).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.fakes.async_providers import REPLICATE_WEBHOOK_SECRET, AsyncFakeState, AsyncOptions, async_routes
from tests.fakes.script import Script
from tests.fakes.server import RecordedRequest, Recorder
from tests.fakes.sync_providers import sync_routes


@dataclass
class SentResponse:
    """What the fake sent back for one request."""

    method: str
    path: str
    status: int | None = None
    body_bytes: int = 0
    complete: bool = False


@dataclass
class ResponseMonitor:
    """ASGI middleware: records every answer's size and completeness; holds answers listed in `holds`."""

    app: ASGIApp
    responses: list[SentResponse] = field(default_factory=list)
    holds: dict[tuple[str, str], float] = field(default_factory=dict)

    def hold(self, method: str, path_prefix: str, seconds: float) -> None:
        """Delay the answer (not the work) of requests to `path_prefix` by `seconds`."""
        self.holds[(method, path_prefix)] = seconds

    def clear(self) -> None:
        self.responses.clear()
        self.holds.clear()

    def sent_for(self, path_prefix: str) -> list[SentResponse]:
        return [response for response in self.responses if response.path.startswith(path_prefix)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = SentResponse(method=scope["method"], path=scope["path"])
        self.responses.append(sent)
        delay = self._delay_for(scope["method"], scope["path"])

        async def monitored_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent.status = message["status"]
                if delay:
                    await asyncio.sleep(delay)
            elif message["type"] == "http.response.body":
                # uvicorn drops writes to a closed connection silently; yielding here lets Starlette's
                # disconnect listener stop the stream, as a server whose writes fail would.
                await asyncio.sleep(0)
                sent.body_bytes += len(message.get("body", b""))
                sent.complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, monitored_send)

    def _delay_for(self, method: str, path: str) -> float:
        return max(
            (
                seconds
                for (held_method, prefix), seconds in self.holds.items()
                if held_method == method and path.startswith(prefix)
            ),
            default=0.0,
        )


@dataclass
class FakeProviders:
    """The combined fake, its shared recorder and script, the asynchronous services' state, and the monitor;
    `url` is where it is served."""

    app: ResponseMonitor
    recorder: Recorder
    script: Script
    state: AsyncFakeState
    url: str = ""

    @property
    def options(self) -> AsyncOptions:
        return self.state.options

    def requests(self, method: str, path_prefix: str) -> list[RecordedRequest]:
        return [
            request
            for request in self.recorder.requests
            if request.method == method and request.path.startswith(path_prefix)
        ]

    async def reset(self, options: AsyncOptions) -> None:
        """Forget every request, job, scripted behaviour and hold (one served fake serves many tests)."""
        await self.state.reset(options)
        self.app.clear()


def create_fake_providers(
    *, webhook_secret: str = REPLICATE_WEBHOOK_SECRET, options: AsyncOptions | None = None
) -> FakeProviders:
    """The app and the handles tests drive it with; serve `fake.app` with tests.fakes.server.serve."""
    recorder, script = Recorder(), Script()
    async_list, state = async_routes(recorder, script, webhook_secret=webhook_secret, options=options)
    app = Starlette(routes=[*sync_routes(recorder, script), *async_list])
    return FakeProviders(app=ResponseMonitor(app), recorder=recorder, script=script, state=state)
