"""A fake Replicate and a fake midjourney-proxy that answer as PROVIDERS.md describes, over real sockets.

Routes (point the adapters' base URLs at `{url}/replicate/v1` and `{url}/mj`):

    /replicate/v1/models/{owner}/{name}/predictions   POST   create (latest version)   route "replicate.create"
    /replicate/v1/predictions                         POST   create (pinned `version`) route "replicate.create"
    /replicate/v1/predictions/{id}                    GET    the prediction            route "replicate.get"
    /replicate/v1/predictions/{id}/cancel             POST   cancel                    route "replicate.cancel"
    /mj/submit/imagine                                POST   imagine (outcome in code) route "midjourney.imagine"
    /mj/task/{id}/fetch                               GET    the Task                  route "midjourney.fetch"
    /outputs/{name}.png                               GET    the PNGs both point at    route "async.outputs"

Each route follows the test's Script (tests/fakes/script.py): "ok"; ("status", code, body?, headers?);
"slow" (held until the client hangs up); "html"; "moderation" (Replicate: a prediction that fails with an NSFW
error; midjourney: code 24, banned prompt). What only asynchronous services do is in AsyncOptions: jobs progress on
their own clock (`step_seconds` per step: starting -> processing with tqdm logs -> succeeded; SUBMITTED ->
IN_PROGRESS 0% -> 45% -> SUCCESS 100%), and callbacks may be duplicated, reversed, late or left out. Replicate
webhooks carry Standard Webhooks headers signed by the `standardwebhooks` reference library; midjourney notifyHook
callbacks are unsigned, as the real proxy sends them. Every request is recorded.
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
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.script import Behaviour, Script, scripted_response
from tests.fakes.server import RecordedRequest, Recorder
from tests.fakes.sync_providers import image_bytes

REPLICATE_CREATE = "replicate.create"
REPLICATE_GET = "replicate.get"
REPLICATE_CANCEL = "replicate.cancel"
MIDJOURNEY_IMAGINE = "midjourney.imagine"
MIDJOURNEY_FETCH = "midjourney.fetch"
OUTPUTS = "async.outputs"

REPLICATE_TOKEN = "r8_fake_token"
REPLICATE_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."


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
        """Record the request and take its behaviour; a scripted status or HTML page answers at once."""
        body = await request.body()
        self.recorder.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.scope["path"],
                query=dict(request.query_params),
                headers=dict(request.headers),
                body=body,
            )
        )
        behaviour = self.script.next(route)
        scripted = scripted_response(behaviour)
        if scripted is not None:
            return body, behaviour, scripted
        if behaviour == "slow":
            deadline = time.monotonic() + self.script.slow_seconds
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.02)
            return body, "ok", None
        return body, behaviour, None

    async def outputs(self, request: Request) -> Response:
        """The images that prediction outputs and task imageUrls point at."""
        _, _, answer = await self.begin(request, OUTPUTS)
        return answer or Response(image_bytes(self.script.image_size, "PNG"), media_type="image/png")


def async_routes(
    recorder: Recorder, script: Script, *, webhook_secret: str, options: AsyncOptions | None = None
) -> tuple[list[Route], AsyncFakeState]:
    """The routes, to join other fakes in one app, and the state that drives them."""
    state = AsyncFakeState(recorder, script, options or AsyncOptions(), Webhook(webhook_secret))
    replicate, midjourney = ReplicateRoutes(state), MidjourneyRoutes(state)
    routes = [
        Route("/replicate/v1/models/{owner}/{name}/predictions", replicate.create, methods=["POST"]),
        Route("/replicate/v1/predictions", replicate.create, methods=["POST"]),
        Route("/replicate/v1/predictions/{id}", replicate.get, methods=["GET"]),
        Route("/replicate/v1/predictions/{id}/cancel", replicate.cancel, methods=["POST"]),
        Route("/mj/submit/imagine", midjourney.imagine, methods=["POST"]),
        Route("/mj/task/{id}/fetch", midjourney.fetch, methods=["GET"]),
        Route("/outputs/{name}.png", state.outputs, methods=["GET"]),
    ]
    return routes, state


def create_async_fake(
    recorder: Recorder, script: Script, *, webhook_secret: str, options: AsyncOptions | None = None
) -> Starlette:
    """The fake alone as an ASGI app; its AsyncFakeState is at `app.state.fake`."""
    routes, state = async_routes(recorder, script, webhook_secret=webhook_secret, options=options)
    app = Starlette(routes=routes)
    app.state.fake = state
    return app


class ReplicateRoutes:
    """Replicate's predictions API."""

    def __init__(self, state: AsyncFakeState) -> None:
        self.state = state

    async def create(self, request: Request) -> Response:
        raw, behaviour, answer = await self.state.begin(request, REPLICATE_CREATE)
        if answer is not None or (answer := self._check_token(request)) is not None:
            return answer
        body = json.loads(raw or b"{}")
        inputs = body.get("input")
        if not isinstance(inputs, dict) or not inputs.get("prompt"):
            return problem(422, "Input validation failed", "- input: prompt is required")
        owner, name = request.path_params.get("owner"), request.path_params.get("name")
        if owner is None and not body.get("version"):
            return problem(422, "Invalid version or not permitted", "version is required")
        prediction = self._new_prediction(request, body, f"{owner}/{name}" if owner else "pinned/model")
        self.state.predictions[prediction["id"]] = prediction
        failure = NSFW_ERROR if behaviour == "moderation" else self.state.options.replicate_failure
        self.state.spawn(self._run(prediction, _base_url(request), body, failure))
        return JSONResponse(prediction, status_code=201)

    async def get(self, request: Request) -> Response:
        _, _, answer = await self.state.begin(request, REPLICATE_GET)
        if answer is not None or (answer := self._check_token(request)) is not None:
            return answer
        prediction = self.state.predictions.get(request.path_params["id"])
        if prediction is None:
            return problem(404, "Not found", "The requested resource could not be found.")
        return JSONResponse(prediction)

    async def cancel(self, request: Request) -> Response:
        _, _, answer = await self.state.begin(request, REPLICATE_CANCEL)
        if answer is not None or (answer := self._check_token(request)) is not None:
            return answer
        prediction = self.state.predictions.get(request.path_params["id"])
        if prediction is None:
            return problem(404, "Not found", "The requested resource could not be found.")
        if prediction["status"] in ("starting", "processing"):
            prediction |= {"status": "canceled", "completed_at": _now()}
        return JSONResponse(prediction)

    def _check_token(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.state.options.replicate_token}":
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return None

    def _new_prediction(self, request: Request, body: dict[str, Any], model: str) -> dict[str, Any]:
        prediction_id = secrets.token_hex(13)
        get_url = f"{_base_url(request)}/replicate/v1/predictions/{prediction_id}"
        return {
            "id": prediction_id,
            "model": model,
            "version": body.get("version") or secrets.token_hex(32),
            "input": body["input"],
            "logs": "",
            "output": None,
            "data_removed": False,
            "error": None,
            "status": "starting",
            "created_at": _now(),
            "started_at": None,
            "completed_at": None,
            "metrics": {},
            "urls": {"get": get_url, "cancel": f"{get_url}/cancel", "stream": f"{get_url}/stream"},
        }

    async def _run(self, prediction: dict[str, Any], base_url: str, body: dict[str, Any], failure: str | None) -> None:
        webhook = WebhookQueue(self.state, body.get("webhook"), set(body.get("webhook_events_filter") or []))
        started = time.monotonic()
        seed = prediction["input"].get("seed", 1234)
        await webhook.send("start", prediction, signed=True)
        for logs in (f"Using seed: {seed}\n  0%|          | 0/4", "\n 50%|█████     | 2/4"):
            await asyncio.sleep(self.state.options.step_seconds)
            if prediction["status"] == "canceled":
                break
            prediction |= {"status": "processing", "started_at": prediction["started_at"] or _now()}
            prediction["logs"] += logs
            await webhook.send("logs", prediction, signed=True)
        else:
            await asyncio.sleep(self.state.options.step_seconds)
            if prediction["status"] != "canceled":
                _finish(prediction, base_url, time.monotonic() - started, failure)
        await webhook.send("completed", prediction, signed=True)
        await webhook.flush()


def _finish(prediction: dict[str, Any], base_url: str, predict_time: float, failure: str | None) -> None:
    prediction |= {"completed_at": _now(), "metrics": {"predict_time": round(predict_time, 3)}}
    prediction["logs"] += "\n100%|██████████| 4/4"
    if failure:
        prediction |= {"status": "failed", "error": failure}
        return
    count = int(prediction["input"].get("num_outputs", 1))
    outputs = [f"{base_url}/outputs/{prediction['id']}-out-{index}.png" for index in range(count)]
    prediction |= {"status": "succeeded", "output": outputs}


class MidjourneyRoutes:
    """midjourney-proxy's task API."""

    def __init__(self, state: AsyncFakeState) -> None:
        self.state = state

    async def imagine(self, request: Request) -> Response:
        raw, behaviour, answer = await self.state.begin(request, MIDJOURNEY_IMAGINE)
        if answer is not None:
            return answer
        secret = self.state.options.midjourney_secret
        if secret is not None and request.headers.get("mj-api-secret") != secret:
            return Response(status_code=401)
        body = json.loads(raw or b"{}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return JSONResponse({"code": 4, "description": "prompt cannot be empty", "result": None})
        banned = next((word for word in self.state.options.banned_words if word in prompt.lower()), None)
        if behaviour == "moderation" or banned is not None:
            properties = {"promptEn": prompt, "bannedWord": banned or prompt.split()[0]}
            return JSONResponse({"code": 24, "description": "Banned prompt", "properties": properties})
        task = _new_task(body)
        self.state.tasks[task["id"]] = task
        self.state.spawn(self._run(task, _base_url(request), body.get("notifyHook")))
        answer_body = {"code": 1, "description": "Submit success", "result": task["id"]}
        return JSONResponse(answer_body | {"properties": {"discordInstanceId": "1118138338562560102"}})

    async def fetch(self, request: Request) -> Response:
        _, _, answer = await self.state.begin(request, MIDJOURNEY_FETCH)
        if answer is not None:
            return answer
        task = self.state.tasks.get(request.path_params["id"])
        # The real proxy answers an unknown id with HTTP 200 and an empty body.
        return JSONResponse(task) if task is not None else Response(status_code=200)

    async def _run(self, task: dict[str, Any], base_url: str, notify_hook: str | None) -> None:
        webhook = WebhookQueue(self.state, notify_hook, None)
        steps: list[dict[str, Any]] = [
            {"status": "SUBMITTED"},
            {"status": "IN_PROGRESS", "progress": "0%", "startTime": _millis()},
            {"status": "IN_PROGRESS", "progress": "45%"},
            self._outcome(task, base_url),
        ]
        for step in steps:
            await asyncio.sleep(self.state.options.step_seconds)
            if "finishTime" in step:
                step["finishTime"] = _millis()
            task |= step
            await webhook.send(task["status"], task, signed=False)
        await webhook.flush()

    def _outcome(self, task: dict[str, Any], base_url: str) -> dict[str, Any]:
        reason = self.state.options.midjourney_fail_reason
        if reason:
            return {"status": "FAILURE", "failReason": reason, "finishTime": None}
        image_url = f"{base_url}/outputs/mj-{task['id']}.png"
        return {"status": "SUCCESS", "progress": "100%", "imageUrl": image_url, "finishTime": None}


def _new_task(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"{_millis()}{secrets.randbelow(1000):03d}",
        "action": "IMAGINE",
        "status": "NOT_START",
        "prompt": body["prompt"],
        "promptEn": body["prompt"],
        "description": f"/imagine {body['prompt']}",
        "state": body.get("state"),
        "submitTime": _millis(),
        "startTime": None,
        "finishTime": None,
        "imageUrl": None,
        "progress": "",
        "failReason": None,
        "properties": {"notifyHook": body.get("notifyHook"), "finalPrompt": body["prompt"]},
    }


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


def problem(status: int, title: str, detail: str) -> JSONResponse:
    """Replicate's RFC 7807 error body."""
    return JSONResponse({"title": title, "detail": detail, "status": status}, status_code=status)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _millis() -> int:
    return int(time.time() * 1000)
