"""Fake Google as it answers in December 2026: Gemini `:generateContent` on the Gemini API and on Vertex AI, and
`GET /v1beta/models`.

Only today's image models are served; every Imagen model (shut down by 2026-08-17), `gemini-2.5-flash-image`
(2026-10-02) and the 3.x previews (2026-06-25) answer 404 NOT_FOUND, as any unknown model does
(ai.google.dev/gemini-api/docs/deprecations, read 2026-12-06)."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import (
    FakeService,
)
from tests.fakes.script import Behaviour, Script
from tests.fakes.server import Recorder

GOOGLE_GENERATE_CONTENT = "google.generateContent"

GOOGLE_SAFETY_MESSAGE = (
    "Image generation failed with the following error: The prompt could not be submitted. This prompt contains "
    "sensitive words that violate Google's Responsible AI practices. Try rephrasing the prompt. If you think this "
    "was an error, send feedback. Support codes: 42876398"
)

SERVED_IMAGE_MODELS = ("gemini-3.1-flash-image", "gemini-3-pro-image")
OTHER_MODELS = ("gemini-3.5-flash", "gemini-3.8-flash", "gemini-embedding-001")
# Image output tokens per image by imageSize (Gemini 3.1 Flash Image: 1120 at 1K).
IMAGE_TOKENS = {"512": 747, "1K": 1120, "2K": 1680, "4K": 2520}


def routes(recorder: Recorder, script: Script) -> list[Route]:
    fake = GoogleFake(recorder, script)
    vertex = "/v1/projects/{project}/locations/{location}/publishers/google/models/{target}"
    return [
        Route("/v1beta/models", fake.models, methods=["GET"]),
        Route("/v1beta/models/{target}", fake.google, methods=["POST"]),
        Route(vertex, fake.google, methods=["POST"]),
    ]


class GoogleFake(FakeService):
    """Gemini image models."""

    async def google(self, request: Request) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        if method != "generateContent":
            await self._record(request)
            return _google_error(404, "NOT_FOUND", f"Method {method!r} not found for {model}.")
        body, behaviour, early = await self._begin(request, GOOGLE_GENERATE_CONTENT)
        if early is not None:
            return early
        unauthenticated = _google_unauthenticated(request)
        if unauthenticated is not None:
            return unauthenticated
        if model not in SERVED_IMAGE_MODELS:
            message = (
                f"models/{model} is not found for API version v1beta, or is not supported for generateContent. "
                "Call ListModels to see the list of available models and their supported methods."
            )
            return _google_error(404, "NOT_FOUND", message)
        return self._google_generate_content(model, json.loads(body), behaviour)

    async def models(self, request: Request) -> Response:
        await self._record(request)
        unauthenticated = _google_unauthenticated(request)
        if unauthenticated is not None:
            return unauthenticated
        if request.headers.get("x-goog-api-key") == "refused-key":
            details = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
            return _google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details)
        models = [
            {"name": f"models/{model}", "supportedGenerationMethods": ["generateContent", "countTokens"]}
            for model in (*SERVED_IMAGE_MODELS, *OTHER_MODELS)
        ]
        return JSONResponse({"models": models})

    def _google_generate_content(self, model: str, payload: dict[str, Any], behaviour: Behaviour) -> Response:
        if not payload.get("contents"):
            message = "* GenerateContentRequest.contents: contents is not specified"
            return _google_error(400, "INVALID_ARGUMENT", message)
        image_size = str(((payload.get("generationConfig") or {}).get("imageConfig") or {}).get("imageSize") or "1K")
        image_tokens = IMAGE_TOKENS.get(image_size, IMAGE_TOKENS["1K"])
        answer: dict[str, Any] = {
            "usageMetadata": {
                "promptTokenCount": 9,
                "candidatesTokenCount": image_tokens + 12,
                "totalTokenCount": image_tokens + 21,
                "candidatesTokensDetails": [
                    {"modality": "TEXT", "tokenCount": 12},
                    {"modality": "IMAGE", "tokenCount": image_tokens},
                ],
            },
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:22],
        }
        if behaviour == "moderation":
            return JSONResponse({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, **answer})
        if behaviour == "all_filtered":
            return JSONResponse({"candidates": [{"finishReason": "IMAGE_SAFETY", "index": 0}], **answer})
        image = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(self._image(behaviour)).decode()}}
        content = {"role": "model", "parts": [{"text": "Here is the image you asked for."}, image]}
        return JSONResponse({"candidates": [{"content": content, "finishReason": "STOP", "index": 0}], **answer})


def _google_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return JSONResponse({"error": error}, code)


def _google_unauthenticated(request: Request) -> Response | None:
    """The Gemini API wants `x-goog-api-key`; Vertex AI wants an OAuth bearer token."""
    if request.url.path.startswith("/v1beta/"):
        if request.headers.get("x-goog-api-key"):
            return None
        return _google_error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key "
            "or other form of API consumer identity to call this API.",
        )
    if request.headers.get("authorization", "").startswith("Bearer "):
        return None
    return _google_error(
        401,
        "UNAUTHENTICATED",
        "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or "
        "other valid authentication credential.",
    )
