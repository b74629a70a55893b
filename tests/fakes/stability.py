"""Fake Stability AI v2beta: generate (ultra, core, sd3), the creative upscaler and its results endpoint."""

from __future__ import annotations

import base64
import io
import random
import secrets
import uuid
from dataclasses import dataclass

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.base import (
    FakeService,
    FilePart,
    _image_response,
    image_bytes,
    parse_multipart,
    parse_multipart_files,
)
from tests.fakes.script import Script
from tests.fakes.server import Recorder

STABILITY_GENERATE = "stability.generate"

STABILITY_UPSCALE = "stability.upscale"

STABILITY_RESULTS = "stability.results"

STABILITY_ASPECT_RATIOS = {"21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21"}

STABILITY_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

STABILITY_INPUT_FORMATS = {"PNG", "JPEG", "WEBP"}

STABILITY_PENDING_POLLS = 2

STABILITY_UPSCALE_FACTOR = 4

STABILITY_UPSCALE_PIXELS = (4096, 1048576)


def routes(recorder: Recorder, script: Script) -> list[Route]:
    fake = StabilityFake(recorder, script)
    return [
        Route("/v2beta/stable-image/generate/{engine}", fake.stability_generate, methods=["POST"]),
        Route("/v2beta/stable-image/upscale/creative", fake.stability_upscale, methods=["POST"]),
        Route("/v2beta/results/{id}", fake.stability_results, methods=["GET"]),
    ]


class StabilityFake(FakeService):
    """Stable Image generate, and the upscaler whose jobs are polled."""

    def __init__(self, recorder: Recorder, script: Script) -> None:
        super().__init__(recorder, script)
        self.stability_jobs: dict[str, StabilityJob] = {}

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
