"""Fake OpenAI Images as the service answers in December 2026: `POST /v1/images/generations`, `POST
/v1/images/edits` (multipart), `GET /v1/models`, and `/files/{name}` for answers that carry a URL.

Only the models OpenAI serves today are served: DALL-E 2 and 3 (shut down 2026-05-12), gpt-image-1 (2026-10-23),
gpt-image-1-mini, gpt-image-1.5 and chatgpt-image-latest (2026-12-01) answer 404 `model_not_found`, as any id the
key cannot call does (developers.openai.com/api/docs/deprecations, read 2026-12-06)."""

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

GPT_SIZES = {"auto", "1024x1024", "1536x1024", "1024x1536"}
# What GET /v1/models lists (image models and their dated snapshots, and a few others); each image model may be
# called. `shutdown_date` is the field OpenAI added for announced retirements.
SERVED_IMAGE_MODELS = (
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-2.5-flare",
    "gpt-image-2.5-flare-2026-09-08",
    "gpt-image-2.5-sunburst",
    "gpt-image-2.5-sunburst-2026-09-08",
    "gpt-image-2.6-flare",
    "gpt-image-2.6-sunburst",
)
OTHER_MODELS = ("gpt-6.1-sol", "gpt-5.1", "whisper-1")
SHUT_DOWN_IMAGE_MODELS = frozenset(
    {"dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest"}
)
# Image output tokens per image by quality (square); the answer's `usage` reports them.
OUTPUT_TOKENS = {"low": 196, "medium": 1767, "high": 7033, "auto": 1767}


def routes(recorder: Recorder, script: Script) -> list[Route]:
    fake = OpenAIFake(recorder, script)
    return [
        Route("/v1/images/generations", fake.openai_generations, methods=["POST"]),
        Route("/v1/images/edits", fake.openai_edits, methods=["POST"]),
        Route("/v1/models", fake.models, methods=["GET"]),
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
        model = str(payload.get("model", "gpt-image-2"))
        if model not in SERVED_IMAGE_MODELS:
            return _model_not_found(model)
        if behaviour in ("moderation", "all_filtered"):
            return _openai_moderation()
        if not payload.get("prompt"):
            return _openai_error(400, "Missing required parameter: 'prompt'.", "invalid_request_error", "prompt")
        if payload.get("size", "1024x1024") not in GPT_SIZES:
            return _openai_error(400, "Invalid size for this model.", "invalid_request_error", "size", "invalid_size")
        n = int(payload.get("n", 1))
        items = [self._openai_item(request, payload, self._image(behaviour)) for _ in range(n)]
        return JSONResponse(_answer(payload, items, image_in=0), headers={"x-request-id": f"req_{uuid.uuid4().hex}"})

    async def models(self, request: Request) -> Response:
        await self._record(request)
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _openai_error(401, "You didn't provide an API key.", "invalid_request_error", None)
        if request.headers["authorization"].endswith("sk-refused"):
            message = "Incorrect API key provided: sk-refu*****. You can find your API key at the dashboard."
            return _openai_error(401, message, "invalid_request_error", None, "invalid_api_key")
        listed = [*SERVED_IMAGE_MODELS, *OTHER_MODELS]
        data = [{"id": model, "object": "model", "created": 1767225600, "owned_by": "system"} for model in listed]
        return JSONResponse({"object": "list", "data": data})

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
        model = fields.get("model", "gpt-image-2")
        if model not in SERVED_IMAGE_MODELS:
            return _model_not_found(model)
        payload = {**fields, "n": int(fields.get("n", "1"))}
        items = [self._openai_item(request, payload, self._image(behaviour)) for _ in range(payload["n"])]
        return JSONResponse(_answer(payload, items, image_in=388), headers={"x-request-id": "req_edit"})

    def _openai_item(self, request: Request, payload: dict[str, Any], image: bytes) -> dict[str, Any]:
        if payload.get("response_format") != "url":
            return {"b64_json": base64.b64encode(image).decode()}
        name = f"{uuid.uuid4().hex}.png"
        self.stored[name] = image
        return {"url": f"{str(request.base_url).rstrip('/')}/files/{name}"}

    async def files(self, request: Request) -> Response:
        await self._record(request)
        data = self.stored.get(request.path_params["name"])
        if data is None:
            return Response("<Error><Code>BlobNotFound</Code></Error>", 404, media_type="application/xml")
        return _image_response(data, "image/png", {}, stream=len(data) > STREAM_CHUNK)


def _openai_error(status: int, message: str, error_type: str, param: str | None, code: str | None = None) -> Response:
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return JSONResponse({"error": error}, status)


def _answer(payload: dict[str, Any], items: list[dict[str, Any]], *, image_in: int) -> dict[str, Any]:
    """A GPT image answer: the images, what was made, and the `usage` tokens it is billed for."""
    quality = str(payload.get("quality") or "auto")
    output_tokens = OUTPUT_TOKENS.get(quality, OUTPUT_TOKENS["auto"]) * len(items)
    usage = {
        "input_tokens": 12 + image_in,
        "input_tokens_details": {"text_tokens": 12, "image_tokens": image_in},
        "output_tokens": output_tokens,
        "total_tokens": 12 + image_in + output_tokens,
    }
    return {
        "created": int(time.time()),
        "data": items,
        "background": "opaque",
        "output_format": "png",
        "quality": quality,
        "size": payload.get("size", "1024x1024"),
        "usage": usage,
    }


def _model_not_found(model: str) -> Response:
    """A shut-down id's answer as clients of dall-e-3 quoted it after 2026-05-12 (dev.to/flarecanary, "DALL·E shuts
    down May 12"); any other unknown id gets OpenAI's usual "does not exist" wording under the same code."""
    if model in SHUT_DOWN_IMAGE_MODELS:
        message = f"The model `{model}` has been deprecated. Learn more: https://platform.openai.com/docs/deprecations"
    else:
        message = f"The model `{model}` does not exist or you do not have access to it."
    return _openai_error(404, message, "invalid_request_error", None, "model_not_found")


def _openai_moderation() -> Response:
    error: dict[str, Any] = {
        "message": "Your request was rejected by the safety system. If you believe this is an error, contact us.",
        "type": "image_generation_user_error",
        "param": None,
        "code": "moderation_blocked",
        "moderation_details": {"moderation_stage": "output", "categories": ["sexual"]},
    }
    return JSONResponse({"error": error}, 400)
