"""Fake OpenAI Images: `POST /v1/images/generations`, `POST /v1/images/edits` (multipart), and the `/files/{name}`
URLs its DALL-E answers point at."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import (
    STREAM_CHUNK,
    FakeService,
    _image_response,
    parse_multipart,
    parse_multipart_files,
)
from tests.fakes.script import Script
from tests.fakes.server import Recorder

OPENAI = "openai.generations"

OPENAI_SIZES = {
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
}

GPT_SIZES = {"auto", "1024x1024", "1536x1024", "1024x1536"}


def routes(recorder: Recorder, script: Script) -> list[Route]:
    fake = OpenAIFake(recorder, script)
    return [
        Route("/v1/images/generations", fake.openai_generations, methods=["POST"]),
        Route("/v1/images/edits", fake.openai_edits, methods=["POST"]),
        Route("/files/{name}", fake.files, methods=["GET"]),
    ]


class OpenAIFake(FakeService):
    """OpenAI Images; `stored` holds the images that URL answers point to."""

    def __init__(self, recorder: Recorder, script: Script) -> None:
        super().__init__(recorder, script)
        self.stored: dict[str, bytes] = {}

    async def openai_generations(self, request: Request) -> Response:
        body, behaviour, early = await self._begin(request, OPENAI)
        if early is not None:
            return early
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _openai_error(401, "You didn't provide an API key.", "invalid_request_error", None)
        payload = json.loads(body)
        model = payload.get("model", "dall-e-2")
        gpt = model.startswith("gpt-image")
        if behaviour in ("moderation", "all_filtered"):
            return _openai_moderation(gpt)
        if not payload.get("prompt"):
            return _openai_error(400, "Missing required parameter: 'prompt'.", "invalid_request_error", "prompt")
        if payload.get("size", "1024x1024") not in (GPT_SIZES if gpt else OPENAI_SIZES.get(model, set())):
            return _openai_error(400, "Invalid size for this model.", "invalid_request_error", "size", "invalid_size")
        n = int(payload.get("n", 1))
        if model == "dall-e-3" and n != 1:
            return _openai_error(400, "You must provide n=1 for this model.", "invalid_request_error", "n")
        items = [self._openai_item(request, payload, gpt, self._image(behaviour)) for _ in range(n)]
        answer: dict[str, Any] = {"created": int(time.time()), "data": items}
        if gpt:
            answer.update(background="opaque", output_format="png", quality=payload.get("quality", "auto"))
            answer["size"] = payload.get("size", "1024x1024")
            answer["usage"] = {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172}
        return JSONResponse(answer, headers={"x-request-id": f"req_{uuid.uuid4().hex}"})

    async def openai_edits(self, request: Request) -> Response:
        """Like generations, from a multipart form whose `image` part is the image to start from."""
        body, behaviour, early = await self._begin(request, OPENAI)
        if early is not None:
            return early
        try:
            fields = parse_multipart(request.headers.get("content-type", ""), body)
            files = parse_multipart_files(request.headers.get("content-type", ""), body)
        except ValueError:
            return _openai_error(400, "Expected multipart/form-data.", "invalid_request_error", None)
        if "image" not in files:
            return _openai_error(400, "Missing required parameter: 'image'.", "invalid_request_error", "image")
        model = fields.get("model", "dall-e-2")
        if model == "dall-e-3":
            return _openai_error(400, "Invalid model: dall-e-3 cannot edit.", "invalid_request_error", "model")
        gpt = model.startswith("gpt-image")
        payload = {**fields, "n": int(fields.get("n", "1"))}
        items = [self._openai_item(request, payload, gpt, self._image(behaviour)) for _ in range(payload["n"])]
        return JSONResponse({"created": int(time.time()), "data": items}, headers={"x-request-id": "req_edit"})

    def _openai_item(self, request: Request, payload: dict[str, Any], gpt: bool, image: bytes) -> dict[str, Any]:
        if gpt or payload.get("response_format") == "b64_json":
            item: dict[str, Any] = {"b64_json": base64.b64encode(image).decode()}
        else:
            name = f"{uuid.uuid4().hex}.png"
            self.stored[name] = image
            item = {"url": f"{str(request.base_url).rstrip('/')}/files/{name}"}
        if payload.get("model") == "dall-e-3":
            item["revised_prompt"] = f"A detailed illustration of {payload['prompt']}"
        return item

    async def files(self, request: Request) -> Response:
        await self._record(request)
        data = self.stored.get(request.path_params["name"])
        if data is None:
            return Response("<Error><Code>BlobNotFound</Code></Error>", 404, media_type="application/xml")
        return _image_response(data, "image/png", {}, stream=len(data) > STREAM_CHUNK)


def _openai_error(status: int, message: str, error_type: str, param: str | None, code: str | None = None) -> Response:
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return JSONResponse({"error": error}, status)


def _openai_moderation(gpt: bool) -> Response:
    if gpt:
        error: dict[str, Any] = {
            "message": "Your request was rejected by the safety system. If you believe this is an error, contact us.",
            "type": "image_generation_user_error",
            "param": None,
            "code": "moderation_blocked",
            "moderation_details": {"moderation_stage": "output", "categories": ["sexual"]},
        }
        return JSONResponse({"error": error}, 400)
    return _openai_error(
        400,
        "Your request was rejected as a result of our safety system. Your prompt may contain text that is not "
        "allowed by our safety system.",
        "invalid_request_error",
        None,
        "content_policy_violation",
    )
