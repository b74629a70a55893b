"""Fake Google: Imagen `:predict` and Gemini `:generateContent`, on the Gemini API and on Vertex AI."""

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

GOOGLE_PREDICT = "google.predict"

GOOGLE_GENERATE_CONTENT = "google.generateContent"

GOOGLE_SAFETY_MESSAGE = (
    "Image generation failed with the following error: The prompt could not be submitted. This prompt contains "
    "sensitive words that violate Google's Responsible AI practices. Try rephrasing the prompt. If you think this "
    "was an error, send feedback. Support codes: 42876398"
)

RAI_FILTERED_REASON = (
    "Unable to show generated images. All images were filtered out because they violated Vertex AI's usage "
    "guidelines. You will not be charged for blocked images. Try rephrasing the prompt. Support codes: 58061214"
)


def routes(recorder: Recorder, script: Script) -> list[Route]:
    fake = GoogleFake(recorder, script)
    vertex = "/v1/projects/{project}/locations/{location}/publishers/google/models/{target}"
    return [
        Route("/v1beta/models/{target}", fake.google, methods=["POST"]),
        Route(vertex, fake.google, methods=["POST"]),
    ]


class GoogleFake(FakeService):
    """Imagen and Gemini image models."""

    async def google(self, request: Request) -> Response:
        model, _, method = request.path_params["target"].partition(":")
        route = {"predict": GOOGLE_PREDICT, "generateContent": GOOGLE_GENERATE_CONTENT}.get(method)
        if route is None:
            await self._record(request)
            return _google_error(404, "NOT_FOUND", f"Method {method!r} not found for {model}.")
        body, behaviour, early = await self._begin(request, route)
        if early is not None:
            return early
        unauthenticated = _google_unauthenticated(request)
        if unauthenticated is not None:
            return unauthenticated
        payload = json.loads(body)
        if route == GOOGLE_PREDICT:
            return self._google_predict(payload, behaviour)
        return self._google_generate_content(model, payload, behaviour)

    def _google_predict(self, payload: dict[str, Any], behaviour: Behaviour) -> Response:
        parameters = payload.get("parameters") or {}
        count = int(parameters.get("sampleCount", 4))
        if not payload.get("instances") or not 1 <= count <= 4:
            return _google_error(400, "INVALID_ARGUMENT", "Invalid value at 'parameters.sampleCount'.")
        if behaviour == "moderation":
            return _google_error(400, "INVALID_ARGUMENT", GOOGLE_SAFETY_MESSAGE)
        if behaviour == "all_filtered":
            filtered = [{"raiFilteredReason": RAI_FILTERED_REASON}] if parameters.get("includeRaiReason") else []
            return JSONResponse({"predictions": filtered} if filtered else {})
        encoded = base64.b64encode(self._image(behaviour)).decode()
        return JSONResponse({"predictions": [{"bytesBase64Encoded": encoded, "mimeType": "image/png"}] * count})

    def _google_generate_content(self, model: str, payload: dict[str, Any], behaviour: Behaviour) -> Response:
        if not payload.get("contents"):
            message = "* GenerateContentRequest.contents: contents is not specified"
            return _google_error(400, "INVALID_ARGUMENT", message)
        answer: dict[str, Any] = {
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9},
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
