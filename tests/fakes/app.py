"""Every fake provider in one ASGI app (one module per provider: tests/fakes/<provider>.py), on one port, as a
deployment would reach them at different hosts.

    /v1/images/generations                     OpenAI             (OPENAI_BASE_URL = {url}/v1)
    /v1beta/models/{model}:{method}            Google Gemini API  (GOOGLE_BASE_URL = {url})
    /v2beta/stable-image/generate/{engine}     Stability          (STABILITY_BASE_URL = {url})
    /v2beta/stable-image/upscale/creative      Stability async    (answers an id; the image at /v2beta/results/{id})
    /prompt/{prompt}                           Pollinations       (POLLINATIONS_BASE_URL = {url})
    /replicate/v1/...                          Replicate          (REPLICATE_BASE_URL = {url}/replicate/v1)
    /mj/...                                    midjourney-proxy   (MIDJOURNEY_BASE_URL = {url}/mj)
    /custom/jobs...                            custom (examples/) (CUSTOM_PROVIDER_URL = {url}/custom)
    /files/{name}, /outputs/{name}.png         the result URLs the answers point at

All routes share one Recorder and one Script. `ResponseMonitor` wraps the app and notes, per request, how much
of the answer was sent and whether it was sent in full (a client that refuses an oversized body hangs up
early), and can hold a route's answer back for a while (a provider slow to answer its create call).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tests.fakes import google, midjourney, openai, pollinations, replicate, stability
from tests.fakes.async_base import AsyncFakeState, AsyncOptions
from tests.fakes.custom import custom_fake
from tests.fakes.replicate import REPLICATE_WEBHOOK_SECRET
from tests.fakes.script import Script
from tests.fakes.server import RecordedRequest, Recorder

# The fakes of the services that answer at once, and of those whose jobs run on their own clock.
SYNC_FAKES = (openai, google, stability, pollinations)
ASYNC_FAKES = (replicate, midjourney)


def sync_routes(recorder: Recorder, script: Script) -> list[Route]:
    return [route for fake in SYNC_FAKES for route in fake.routes(recorder, script)]


def create_sync_fake(recorder: Recorder, script: Script) -> Starlette:
    """One ASGI app with every synchronous provider's endpoints."""
    return Starlette(routes=sync_routes(recorder, script))


def async_routes(
    recorder: Recorder, script: Script, *, webhook_secret: str, options: AsyncOptions | None = None
) -> tuple[list[Route], AsyncFakeState]:
    """The routes, to join other fakes in one app, and the state that drives them."""
    state = AsyncFakeState(recorder, script, options or AsyncOptions(), Webhook(webhook_secret))
    routes = [route for fake in ASYNC_FAKES for route in fake.routes(state)]
    return [*routes, Route("/outputs/{name}.png", state.outputs, methods=["GET"])], state


def create_async_fake(
    recorder: Recorder, script: Script, *, webhook_secret: str, options: AsyncOptions | None = None
) -> Starlette:
    """The asynchronous fakes alone as an ASGI app; their AsyncFakeState is at `app.state.fake`."""
    routes, state = async_routes(recorder, script, webhook_secret=webhook_secret, options=options)
    app = Starlette(routes=routes)
    app.state.fake = state
    return app


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
    custom = custom_fake(recorder=recorder)
    app = Starlette(routes=[*sync_routes(recorder, script), *async_list, Mount("/custom", app=custom)])
    return FakeProviders(app=ResponseMonitor(app), recorder=recorder, script=script, state=state)
