"""Fake Replicate (point REPLICATE_BASE_URL at `{url}/replicate/v1`): predictions that progress on their own clock
(starting -> processing with tqdm logs -> succeeded), model schemas, file uploads, signed webhooks."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.async_base import AsyncFakeState, WebhookQueue, _base_url, _now

REPLICATE_CREATE = "replicate.create"

REPLICATE_GET = "replicate.get"

REPLICATE_CANCEL = "replicate.cancel"

REPLICATE_SCHEMA = "replicate.schema"

REPLICATE_UPLOAD = "replicate.upload"


REPLICATE_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."


def routes(state: AsyncFakeState) -> list[Route]:
    replicate = ReplicateRoutes(state)
    return [
        Route("/replicate/v1/models/{owner}/{name}/predictions", replicate.create, methods=["POST"]),
        Route("/replicate/v1/predictions", replicate.create, methods=["POST"]),
        Route("/replicate/v1/models/{owner}/{name}", replicate.model, methods=["GET"]),
        Route("/replicate/v1/models/{owner}/{name}/versions/{version}", replicate.version, methods=["GET"]),
        Route("/replicate/v1/files", replicate.upload, methods=["POST"]),
        Route("/replicate/v1/predictions/{id}", replicate.get, methods=["GET"]),
        Route("/replicate/v1/predictions/{id}/cancel", replicate.cancel, methods=["POST"]),
    ]


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

    async def model(self, request: Request) -> Response:
        """A model with its latest version's OpenAPI schema (the input fields the adapter looks for)."""
        _, _, answer = await self.state.begin(request, REPLICATE_SCHEMA)
        if answer is not None or (answer := self._check_token(request)) is not None:
            return answer
        name = f"{request.path_params['owner']}/{request.path_params['name']}"
        return JSONResponse({"owner": request.path_params["owner"], "latest_version": _version(name, "latest")})

    async def version(self, request: Request) -> Response:
        _, _, answer = await self.state.begin(request, REPLICATE_SCHEMA)
        if answer is not None or (answer := self._check_token(request)) is not None:
            return answer
        name = f"{request.path_params['owner']}/{request.path_params['name']}"
        return JSONResponse(_version(name, request.path_params["version"]))

    async def upload(self, request: Request) -> Response:
        """`POST /files`: kept, and answered with the URL predictions may then take."""
        _, _, answer = await self.state.begin(request, REPLICATE_UPLOAD)
        if answer is not None or (answer := self._check_token(request)) is not None:
            return answer
        file_id = secrets.token_hex(8)
        url = f"{_base_url(request)}/replicate/v1/files/{file_id}"
        return JSONResponse({"id": file_id, "urls": {"get": url}}, status_code=201)

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


def _version(model: str, version_id: str) -> dict[str, Any]:
    """A model version whose Input schema has the image field that kind of model has (or none)."""
    properties: dict[str, Any] = {"prompt": {"type": "string"}, "seed": {"type": "integer"}}
    if "kontext" in model:
        properties["input_image"] = {"type": "string", "format": "uri"}
    elif "sdxl" in model:
        properties["image"] = {"type": "string", "format": "uri"}
    elif "multi-image" in model:
        properties["input_images"] = {"type": "array", "items": {"type": "string", "format": "uri"}}
    schema = {"components": {"schemas": {"Input": {"type": "object", "properties": properties}}}}
    return {"id": version_id, "openapi_schema": schema}


def _finish(prediction: dict[str, Any], base_url: str, predict_time: float, failure: str | None) -> None:
    prediction |= {"completed_at": _now(), "metrics": {"predict_time": round(predict_time, 3)}}
    prediction["logs"] += "\n100%|██████████| 4/4"
    if failure:
        prediction |= {"status": "failed", "error": failure}
        return
    count = int(prediction["input"].get("num_outputs", 1))
    outputs = [f"{base_url}/outputs/{prediction['id']}-out-{index}.png" for index in range(count)]
    prediction |= {"status": "succeeded", "output": outputs}


def problem(status: int, title: str, detail: str) -> JSONResponse:
    """Replicate's RFC 7807 error body."""
    return JSONResponse({"title": title, "detail": detail, "status": status}, status_code=status)
