"""Fake OpenAI Images, Google (Gemini API and Vertex AI), Stability (generate, creative upscale and its results)
and Pollinations endpoints.

Each answers as docs/providers.md says the real service does (real PNG/JPEG bytes made with Pillow), records
every request in a Recorder, and follows the test's Script per route (see tests/fakes/script.py). `sync_routes`
lets the routes join other fakes in one app; `create_sync_fake` serves them alone.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from functools import lru_cache
from typing import Any

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.script import Behaviour, Script, scripted_response
from tests.fakes.server import RecordedRequest, Recorder

OPENAI = "openai.generations"
GOOGLE_PREDICT = "google.predict"
GOOGLE_GENERATE_CONTENT = "google.generateContent"
STABILITY_GENERATE = "stability.generate"
STABILITY_UPSCALE = "stability.upscale"
STABILITY_RESULTS = "stability.results"
POLLINATIONS = "pollinations.image"

STABILITY_ASPECT_RATIOS = {"21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21"}
STABILITY_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
STABILITY_INPUT_FORMATS = {"PNG", "JPEG", "WEBP"}
# Answers of GET /v2beta/results/{id} that say 202 (still running) before the image comes.
STABILITY_PENDING_POLLS = 2
STABILITY_UPSCALE_FACTOR = 4
STABILITY_UPSCALE_PIXELS = (4096, 1048576)
OPENAI_SIZES = {
    "dall-e-2": {"256x256", "512x512", "1024x1024"},
    "dall-e-3": {"1024x1024", "1792x1024", "1024x1792"},
}
GPT_SIZES = {"auto", "1024x1024", "1536x1024", "1024x1536"}
GOOGLE_SAFETY_MESSAGE = (
    "Image generation failed with the following error: The prompt could not be submitted. This prompt contains "
    "sensitive words that violate Google's Responsible AI practices. Try rephrasing the prompt. If you think this "
    "was an error, send feedback. Support codes: 42876398"
)
RAI_FILTERED_REASON = (
    "Unable to show generated images. All images were filtered out because they violated Vertex AI's usage "
    "guidelines. You will not be charged for blocked images. Try rephrasing the prompt. Support codes: 58061214"
)
STREAM_CHUNK = 64 * 1024


def create_sync_fake(recorder: Recorder, script: Script) -> Starlette:
    """One ASGI app with every synchronous provider's endpoints."""
    return Starlette(routes=sync_routes(recorder, script))


def sync_routes(recorder: Recorder, script: Script) -> list[Route]:
    fake = SyncProvidersFake(recorder, script)
    google_vertex = "/v1/projects/{project}/locations/{location}/publishers/google/models/{target}"
    return [
        Route("/v1/images/generations", fake.openai_generations, methods=["POST"]),
        Route("/v1/images/edits", fake.openai_edits, methods=["POST"]),
        Route("/v1beta/models/{target}", fake.google, methods=["POST"]),
        Route(google_vertex, fake.google, methods=["POST"]),
        Route("/v2beta/stable-image/generate/{engine}", fake.stability_generate, methods=["POST"]),
        Route("/v2beta/stable-image/upscale/creative", fake.stability_upscale, methods=["POST"]),
        Route("/v2beta/results/{id}", fake.stability_results, methods=["GET"]),
        Route("/prompt/{prompt:path}", fake.pollinations, methods=["GET"]),
        Route("/image/{prompt:path}", fake.pollinations, methods=["GET"]),
        Route("/files/{name}", fake.files, methods=["GET"]),
    ]


@lru_cache(maxsize=32)
def image_bytes(size: tuple[int, int], image_format: str = "PNG") -> bytes:
    """A real image: a two-colour gradient, so it is not trivially a single colour."""
    gradient = Image.linear_gradient("L").resize(size)
    flipped = gradient.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    image = Image.merge("RGB", (gradient, Image.new("L", size, 96), flipped))
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def form_fields(recorded: RecordedRequest) -> dict[str, str]:
    """The fields of a recorded multipart/form-data body; ValueError when it is not multipart."""
    return parse_multipart(recorded.headers.get("content-type", ""), recorded.body)


def form_files(recorded: RecordedRequest) -> dict[str, FilePart]:
    """The file parts (e.g. Stability's `image`) of a recorded multipart/form-data body."""
    return parse_multipart_files(recorded.headers.get("content-type", ""), recorded.body)


@dataclass(frozen=True)
class FilePart:
    """A multipart part sent with a filename: its bytes and declared type."""

    filename: str
    content_type: str
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> dict[str, str]:
    """The plain fields (parts without a filename) of a multipart/form-data body."""
    return {
        name: payload.decode()
        for name, part, payload in _multipart_parts(content_type, body)
        if not part.get_filename()
    }


def parse_multipart_files(content_type: str, body: bytes) -> dict[str, FilePart]:
    return {
        name: FilePart(str(part.get_filename()), part.get_content_type(), payload)
        for name, part, payload in _multipart_parts(content_type, body)
        if part.get_filename()
    }


def _multipart_parts(content_type: str, body: bytes) -> list[tuple[str, EmailMessage, bytes]]:
    if not content_type.startswith("multipart/form-data"):
        raise ValueError(f"not multipart/form-data but {content_type!r}")
    envelope = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    message = BytesParser(policy=policy.HTTP).parsebytes(envelope)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        raise ValueError("malformed multipart body")
    parts = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        parts.append((str(name), part, payload if isinstance(payload, bytes) else b""))
    return parts


class SyncProvidersFake:
    """The endpoint handlers; `stored` holds the images that URL answers point to."""

    def __init__(self, recorder: Recorder, script: Script) -> None:
        self.recorder = recorder
        self.script = script
        self.stored: dict[str, bytes] = {}
        self.stability_jobs: dict[str, StabilityJob] = {}

    async def _record(self, request: Request) -> bytes:
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
        return body

    async def _begin(self, request: Request, route: str) -> tuple[bytes, Behaviour, Response | None]:
        """Record the request and take its behaviour; a scripted status or HTML page answers at once."""
        body = await self._record(request)
        behaviour = self.script.next(route)
        scripted = scripted_response(behaviour)
        if scripted is not None:
            return body, behaviour, scripted
        if behaviour == "slow":
            await self._stall(request)
            return body, "ok", None
        return body, behaviour, None

    async def _stall(self, request: Request) -> None:
        """Hold the answer until the client hangs up, so a timed-out test leaves no request running."""
        deadline = time.monotonic() + self.script.slow_seconds
        while time.monotonic() < deadline and not await request.is_disconnected():
            await asyncio.sleep(0.02)

    def _image(self, behaviour: Behaviour, image_format: str = "PNG") -> bytes:
        data = image_bytes(self.script.image_size, image_format)
        if behaviour == "oversized":
            return data + b"\0" * max(0, self.script.oversized_bytes - len(data))
        return data

    # OpenAI ---------------------------------------------------------------------------------------------------

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

    # Google ---------------------------------------------------------------------------------------------------

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

    # Stability ------------------------------------------------------------------------------------------------

    async def stability_generate(self, request: Request) -> Response:
        body, behaviour, early = await self._begin(request, STABILITY_GENERATE)
        if early is not None:
            return early
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _stability_error(401, "unauthorized", "authorization: missing or invalid")
        if request.path_params["engine"] not in ("ultra", "core", "sd3"):
            return _stability_error(404, "not_found", f"{request.url.path} does not exist")
        try:
            fields, files = _stability_form(request, body)
        except ValueError:
            return _stability_error(400, "bad_request", "content-type: must be multipart/form-data")
        problem = _stability_problem(fields) or _stability_image_problem(request.path_params["engine"], fields, files)
        if problem:
            return _stability_error(400, "bad_request", problem)
        if behaviour == "moderation":
            return _stability_moderation()
        seed = int(fields.get("seed") or 0) or random.randint(1, 4294967294)
        finish_reason = "CONTENT_FILTERED" if behaviour == "all_filtered" else "SUCCESS"
        output_format = fields.get("output_format", "png")
        image = self._image(behaviour, STABILITY_FORMATS[output_format])
        if request.headers.get("accept", "image/*").startswith("application/json"):
            encoded = base64.b64encode(image).decode()
            return JSONResponse({"image": encoded, "finish_reason": finish_reason, "seed": seed})
        headers = {"finish-reason": finish_reason, "seed": str(seed)}
        return _image_response(image, f"image/{output_format}", headers, stream=behaviour == "oversized")

    async def stability_upscale(self, request: Request) -> Response:
        """Creative upscale: checks the form, answers `{"id"}` at once; the image waits at /v2beta/results/{id}."""
        body, behaviour, early = await self._begin(request, STABILITY_UPSCALE)
        if early is not None:
            return early
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _stability_error(401, "unauthorized", "authorization: missing or invalid")
        try:
            fields, files = _stability_form(request, body)
        except ValueError:
            return _stability_error(400, "bad_request", "content-type: must be multipart/form-data")
        if "image" not in files:
            return _stability_error(400, "bad_request", "image: required")
        size, problem = _upscale_input_size(files["image"])
        problem = problem or _stability_problem(fields)
        if problem:
            return _stability_error(400, "bad_request", problem)
        if behaviour == "moderation":
            return _stability_moderation()
        job_id = secrets.token_hex(32)
        output_size = (size[0] * STABILITY_UPSCALE_FACTOR, size[1] * STABILITY_UPSCALE_FACTOR)
        seed = int(fields.get("seed") or 0) or random.randint(1, 4294967294)
        self.stability_jobs[job_id] = StabilityJob(output_size, seed, filtered=behaviour == "all_filtered")
        return JSONResponse({"id": job_id})

    async def stability_results(self, request: Request) -> Response:
        """202 `{id, status}` for the first STABILITY_PENDING_POLLS looks, then the image (as generate sends it)."""
        _, _, early = await self._begin(request, STABILITY_RESULTS)
        if early is not None:
            return early
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _stability_error(401, "unauthorized", "authorization: missing or invalid")
        job_id = request.path_params["id"]
        job = self.stability_jobs.get(job_id)
        if job is None:
            return _stability_error(404, "not_found", f"generation {job_id} not found (or older than 24 hours)")
        if job.pending_polls > 0:
            job.pending_polls -= 1
            return JSONResponse({"id": job_id, "status": "in-progress"}, 202)
        image = image_bytes(job.size, "PNG")
        finish_reason = "CONTENT_FILTERED" if job.filtered else "SUCCESS"
        if request.headers.get("accept", "image/*").startswith("application/json"):
            encoded = base64.b64encode(image).decode()
            return JSONResponse({"result": encoded, "finish_reason": finish_reason, "seed": job.seed})
        headers = {"finish-reason": finish_reason, "seed": str(job.seed)}
        return _image_response(image, "image/png", headers, stream=False)

    # Pollinations ---------------------------------------------------------------------------------------------

    async def pollinations(self, request: Request) -> Response:
        _, behaviour, early = await self._begin(request, POLLINATIONS)
        if early is not None:
            return early
        if behaviour in ("moderation", "all_filtered"):
            return Response(f"scripted behaviour {behaviour!r} does not exist on Pollinations", 501)
        image = self._image(behaviour, "JPEG")
        return _image_response(image, "image/jpeg", {}, stream=behaviour == "oversized")

    # Result URLs ----------------------------------------------------------------------------------------------

    async def files(self, request: Request) -> Response:
        await self._record(request)
        data = self.stored.get(request.path_params["name"])
        if data is None:
            return Response("<Error><Code>BlobNotFound</Code></Error>", 404, media_type="application/xml")
        return _image_response(data, "image/png", {}, stream=len(data) > STREAM_CHUNK)


def _image_response(data: bytes, media_type: str, headers: dict[str, str], *, stream: bool) -> Response:
    """Raw image bytes; large bodies are streamed in chunks without a Content-Length, as CDNs often do."""
    if not stream:
        return Response(data, headers=headers, media_type=media_type)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), STREAM_CHUNK):
            yield data[start : start + STREAM_CHUNK]

    return StreamingResponse(chunks(), headers=headers, media_type=media_type)


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


def _stability_error(status: int, name: str, *errors: str) -> Response:
    return JSONResponse({"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}, status)


@dataclass
class StabilityJob:
    """An accepted asynchronous job: what its result will be, and how many more polls it answers 202."""

    size: tuple[int, int]
    seed: int
    filtered: bool = False
    pending_polls: int = STABILITY_PENDING_POLLS


def _stability_form(request: Request, body: bytes) -> tuple[dict[str, str], dict[str, FilePart]]:
    content_type = request.headers.get("content-type", "")
    return parse_multipart(content_type, body), parse_multipart_files(content_type, body)


def _stability_moderation() -> Response:
    return _stability_error(
        403,
        "content_moderation",
        "Your request was flagged by our content moderation system, as a result your request was denied "
        "and you were not charged.",
    )


def _decoded_size(part: FilePart) -> tuple[tuple[int, int], str | None]:
    """The size of an uploaded image, or why it is not one Stability takes."""
    try:
        with Image.open(io.BytesIO(part.data)) as image:
            size, image_format = image.size, image.format
    except (OSError, ValueError):
        return (0, 0), "image: cannot be decoded as an image"
    if image_format not in STABILITY_INPUT_FORMATS:
        return size, "image: must be png, jpeg or webp"
    return size, None


def _upscale_input_size(part: FilePart) -> tuple[tuple[int, int], str | None]:
    size, problem = _decoded_size(part)
    low, high = STABILITY_UPSCALE_PIXELS
    if problem is None and not low <= size[0] * size[1] <= high:
        problem = f"image: must have between {low} and {high} pixels, not {size[0] * size[1]}"
    return size, problem


def _stability_image_problem(engine: str, fields: dict[str, str], files: dict[str, FilePart]) -> str | None:
    """Image-to-image on generate: `image` needs `strength` (and on sd3 `mode=image-to-image`); Core takes none."""
    if "image" not in files:
        return "strength: only valid with an image" if "strength" in fields else None
    if engine == "core":
        return "image: not supported by stable-image-core"
    _, problem = _decoded_size(files["image"])
    if problem:
        return problem
    try:
        strength = float(fields["strength"])
    except (KeyError, ValueError):
        strength = -1.0
    if not 0 <= strength <= 1:
        return "strength: required with an image, between 0 and 1"
    if engine == "sd3" and fields.get("mode") != "image-to-image":
        return "mode: must be image-to-image when an image is sent"
    if engine == "sd3" and "aspect_ratio" in fields:
        return "aspect_ratio: only valid for text-to-image"
    return None


def _stability_problem(fields: dict[str, str]) -> str | None:
    if not fields.get("prompt"):
        return "prompt: cannot be empty"
    if len(fields["prompt"]) > 10000:
        return "prompt: must be at most 10000 characters"
    if fields.get("aspect_ratio", "1:1") not in STABILITY_ASPECT_RATIOS:
        return f"aspect_ratio: must be one of {', '.join(sorted(STABILITY_ASPECT_RATIOS))}"
    if fields.get("output_format", "png") not in STABILITY_FORMATS:
        return "output_format: must be one of png, jpeg, webp"
    if not 0 <= int(fields.get("seed") or 0) <= 4294967294:
        return "seed: must be between 0 and 4294967294"
    return None
