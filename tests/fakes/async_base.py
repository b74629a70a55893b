"""What the asynchronous fakes share: their jobs' clock, callbacks (duplicated, reversed, late or left out), and
the output images their results point at.

Replicate webhooks carry Standard Webhooks headers signed by the `standardwebhooks` reference library;
midjourney notifyHook callbacks are unsigned, as the real proxy sends them. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook
from starlette.requests import Request
from starlette.responses import Response

from tests.fakes.base import begin_request, image_bytes
from tests.fakes.script import Behaviour, Script
from tests.fakes.server import Recorder

OUTPUTS = "async.outputs"
REPLICATE_TOKEN = "r8_fake_token"


@dataclass
class AsyncOptions:
    """How the asynchronous services behave beyond one answer: credentials, timing, outcomes, callbacks."""

    replicate_token: str = REPLICATE_TOKEN
    midjourney_secret: str | None = None
    step_seconds: float = 0.1
    replicate_failure: str | None = None
    midjourney_fail_reason: str | None = None
    banned_words: tuple[str, ...] = ("gore",)
    webhooks: bool = True
    webhook_copies: int = 1
    webhook_reversed: bool = False
    webhook_delay: float = 0.0


@dataclass
class Delivery:
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass
class AsyncFakeState:
    """The fake's jobs and background work; `settle()` waits until every job and callback has finished."""

    recorder: Recorder
    script: Script
    options: AsyncOptions
    webhook_signer: Webhook
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries_sent: list[Delivery] = field(default_factory=list)
    background: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def settle(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.background and time.monotonic() < deadline:
            await asyncio.wait(list(self.background), timeout=deadline - time.monotonic())

    async def aclose(self) -> None:
        for task in list(self.background):
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)

    async def reset(self, options: AsyncOptions) -> None:
        """Forget every job, request and scripted behaviour (one served fake can serve many tests)."""
        await self.aclose()
        self.options = options
        self.script.reset()
        self.recorder.clear()
        self.predictions.clear()
        self.tasks.clear()
        self.deliveries_sent.clear()

    async def begin(self, request: Request, route: str) -> tuple[bytes, Behaviour, Response | None]:
        return await begin_request(self.recorder, self.script, request, route)

    async def outputs(self, request: Request) -> Response:
        """The images that prediction outputs and task imageUrls point at."""
        _, _, answer = await self.begin(request, OUTPUTS)
        return answer or Response(image_bytes(self.script.image_size, "PNG"), media_type="image/png")


class WebhookQueue:
    """Sends one job's callbacks as the options say: copies, delay, and reversed order (held until the end)."""

    def __init__(self, state: AsyncFakeState, url: str | None, events: set[str] | None) -> None:
        self.state = state
        self.url = url if state.options.webhooks else None
        self.events = events
        self.held: list[Delivery] = []

    async def send(self, event: str, payload: dict[str, Any], *, signed: bool) -> None:
        if self.url is None or (self.events is not None and event not in self.events):
            return
        body = json.dumps(payload).encode()
        headers = {"content-type": "application/json"}
        if signed:
            headers |= self._standard_webhook_headers(body)
        delivery = Delivery(self.url, body, headers)
        if self.state.options.webhook_reversed:
            self.held.append(delivery)
        else:
            await self._deliver(delivery)

    async def flush(self) -> None:
        for delivery in reversed(self.held):
            await self._deliver(delivery)
        self.held.clear()

    def _standard_webhook_headers(self, body: bytes) -> dict[str, str]:
        webhook_id = f"msg_{secrets.token_urlsafe(18)}"
        sent_at = datetime.now(UTC)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": self.state.webhook_signer.sign(webhook_id, sent_at, body.decode()),
        }

    async def _deliver(self, delivery: Delivery) -> None:
        await asyncio.sleep(self.state.options.webhook_delay)
        async with httpx.AsyncClient(timeout=5.0) as client:
            for _ in range(self.state.options.webhook_copies):
                try:
                    await client.post(delivery.url, content=delivery.body, headers=delivery.headers)
                except httpx.TransportError:
                    continue
                self.state.deliveries_sent.append(delivery)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _millis() -> int:
    return int(time.time() * 1000)
