"""Stability AI v2beta: the synchronous generate endpoints and the asynchronous upscaler.

Generate (`POST /v2beta/stable-image/generate/{ultra|core|sd3}`): multipart/form-data; with `Accept: image/*` the
answer is the image itself, streamed to the sink, with `finish-reason` and `seed` headers. A CONTENT_FILTERED
finish reason is still HTTP 200 (a blurred image), so it is checked before a byte is stored. One call makes one
image: `n` outputs take `n` calls, seeds `seed + i`. Ultra and SD 3.5 also start from an input image
(`image` + `strength`; SD 3.5 with `mode=image-to-image`).

Creative upscale (`POST /v2beta/stable-image/upscale/creative`) is asynchronous: the answer is `{"id": ...}` and
the image is fetched from `GET /v2beta/results/{id}`, which says 202 until it is done. Stability sends no webhooks,
so the whole exchange stays inside the provider activity: submit, remember the id with the sink (Temporal keeps it
in the activity's heartbeat details), then poll. A retried attempt finds the id and resumes polling instead of
submitting, and paying for, the job again.

Input images are fetched by the worker from the job's `previousImage` (providers.input_images); only the URL ever
travels. `classify_stability_error` serves every endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from core.config import Settings
from models.errors import (
    BAD_OUTPUT,
    CONTENT_POLICY,
    JOB_FAILED,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from models.payloads import PromptSpec, Provenance, ProviderCall
from providers.base import ModelCapabilities, OutputSink
from providers.classify import ErrorClassifier, as_object, classify_status, error_reason, retry_after
from providers.http_base import Connection, HttpProvider
from providers.input_images import InputImage, form_parts
from providers.request_checks import (
    check_count,
    check_prompt,
    check_seeds,
    map_choice,
    unused_fields,
)
from providers.sizing import nearest_ratio
from providers.transfer import fetch_json, parse_json, poll_image, stream_image

logger = logging.getLogger(__name__)

LABEL = "Stability"
ENGINES = {
    "stable-image-ultra": "ultra",
    "stable-image-core": "core",
    "sd3.5-large": "sd3",
    "sd3.5-large-turbo": "sd3",
    "sd3.5-medium": "sd3",
}
ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
MAX_PROMPT_CHARS = 10000
MAX_OUTPUTS = 4
SEED_RANGE = (0, 4294967294)
STYLE_PRESETS = {
    preset: preset
    for preset in (
        "3d-model",
        "analog-film",
        "anime",
        "cinematic",
        "comic-book",
        "digital-art",
        "enhance",
        "fantasy-art",
        "isometric",
        "line-art",
        "low-poly",
        "modeling-compound",
        "neon-punk",
        "origami",
        "photographic",
        "pixel-art",
        "tile-texture",
    )
}
STYLED_ENGINES = frozenset({"ultra", "core"})
NO_NEGATIVE_PROMPT_MODELS = frozenset({"sd3.5-large-turbo"})
# Models whose endpoint answers with a job id; the image comes from /v2beta/results/{id}.
ASYNC_ENDPOINTS = {"upscale-creative": "/v2beta/stable-image/upscale/creative"}
# Stable Image Core draws from text only; Ultra and SD 3.5 take `image` + `strength` as well.
INPUT_IMAGE_MODELS = frozenset(
    {"stable-image-ultra", "sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", *ASYNC_ENDPOINTS}
)
INPUT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
# Stability refuses requests over 10 MiB (HTTP 413), so a larger input image is refused before the call.
MAX_INPUT_IMAGE_BYTES = 10 * 1024 * 1024
# Image-to-image without a strength: halfway between keeping the input image and ignoring it.
DEFAULT_STRENGTH = 0.5
SUBMIT_ANSWER_LIMIT = 64 * 1024
RESULTS_PATH = "/v2beta/results"
# Job ids become part of the results URL; Stability's are 64 hex characters.
JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def classify_stability_error(response: httpx.Response, body: bytes) -> ProviderError:
    """Stability's `{"id", "name", "errors": [...]}` answers, classified once (sync and async endpoints)."""
    payload = as_object(parse_json(body))
    name = str(payload.get("name") or "")
    errors = payload.get("errors")
    joined = "; ".join(str(error) for error in errors) if isinstance(errors, list) else None
    reason = error_reason(joined, body)
    if name == "content_moderation":
        return ProviderRejected(
            f"Stability refused the prompt (content_moderation): {reason}. Rephrase the prompt.", type=CONTENT_POLICY
        )
    return classify_status(
        LABEL,
        response.status_code,
        f"{name}: {reason}" if name else reason,
        retry_after=retry_after(response.headers),
        key_setting=StabilityProvider.key_setting,
    )


def refuse_filtered_output(headers: httpx.Headers) -> None:
    """A CONTENT_FILTERED result is a blurred image with HTTP 200; it must not be stored as a success."""
    finish_reason = headers.get("finish-reason", "SUCCESS")
    if finish_reason == "CONTENT_FILTERED":
        raise ProviderRejected(
            "Stability's content filter blurred the image (finish-reason CONTENT_FILTERED). Rephrase the prompt.",
            type=CONTENT_POLICY,
        )


def classify_result_error(provider_job_id: str) -> ErrorClassifier:
    """Errors of `GET /v2beta/results/{id}`: a 404 means the result is gone for good (or was never ours)."""

    def classify(response: httpx.Response, body: bytes) -> ProviderError:
        if response.status_code == 404:
            return ProviderRejected(
                f"Stability has no result for job {provider_job_id}: results are kept for 24 hours and only for "
                "the API key that submitted the job. Start a new job.",
                type=JOB_FAILED,
            )
        return classify_stability_error(response, body)

    return classify


@dataclass(frozen=True)
class StabilityPlan:
    """What will be sent for one job, derived once from the spec."""

    model: str
    aspect_ratio: str | None  # None when an input image sets the output's shape
    n: int
    negative_prompt: str | None
    seed: int | None
    style_preset: str | None
    input_image_url: str | None
    strength: float | None  # image-to-image only; the upscaler has no such parameter
    ignored: tuple[str, ...]

    @property
    def asynchronous(self) -> bool:
        return self.model in ASYNC_ENDPOINTS

    @property
    def path(self) -> str:
        return ASYNC_ENDPOINTS.get(self.model) or f"/v2beta/stable-image/generate/{ENGINES[self.model]}"

    def form(self, prompt: str, index: int) -> dict[str, str]:
        """The form fields of the `index`-th call; seed 0 asks Stability to pick one."""
        fields = {
            "prompt": prompt,
            "output_format": "png",
            "seed": str(self.seed + index if self.seed is not None else 0),
        }
        if self.aspect_ratio:
            fields["aspect_ratio"] = self.aspect_ratio
        if self.negative_prompt:
            fields["negative_prompt"] = self.negative_prompt
        if self.style_preset:
            fields["style_preset"] = self.style_preset
        if self.strength is not None:
            fields["strength"] = f"{self.strength:g}"
        if ENGINES.get(self.model) == "sd3":
            fields["model"] = self.model
            if self.input_image_url:
                fields["mode"] = "image-to-image"
        return fields

    def effective(self) -> dict[str, Any]:
        effective: dict[str, Any] = {"n": self.n}
        if self.aspect_ratio:
            effective["aspectRatio"] = self.aspect_ratio
        if self.style_preset:
            effective["style"] = self.style_preset
        if self.strength is not None:
            effective["strength"] = self.strength
        if self.ignored:
            effective["ignored"] = list(self.ignored)
        return effective


def _ignored(spec: PromptSpec, supported: set[str], *, from_image: bool, upscale: bool) -> tuple[str, ...]:
    """Spec fields the calls will not use: with an input image, its shape sets the output's."""
    ignored = unused_fields(spec, supported)
    if from_image:
        ignored += [name for name, value in (("size", spec.size), ("aspectRatio", spec.aspect_ratio)) if value]
    if upscale and spec.strength is not None:
        ignored.append("strength")
    return tuple(ignored)


class StabilityProvider(HttpProvider):
    """Stability AI Stable Image Ultra, Core and SD 3.5 (synchronous), and the creative upscaler (asynchronous)."""

    name: ClassVar[str] = "stability"
    models: tuple[str, ...] = (*ENGINES, *ASYNC_ENDPOINTS)
    default_model: str = "stable-image-core"
    input_image_models: frozenset[str] = INPUT_IMAGE_MODELS
    input_image_required_models: frozenset[str] = frozenset(ASYNC_ENDPOINTS)
    description: ClassVar[str] = (
        "Stability AI v2beta: Stable Image Ultra, Stable Image Core, SD 3.5 (Ultra and SD 3.5 also from an "
        "previousImage with strength), and upscale-creative (needs a previousImage)."
    )

    label: ClassVar[str] = LABEL
    settings_prefix: ClassVar[str] = "STABILITY"

    def __init__(
        self,
        connection: Connection,
        *,
        rate_per_minute: float | None = None,
        poll_interval_seconds: float = 5.0,
        poll_timeout_seconds: float = 300.0,
    ) -> None:
        super().__init__(connection, rate_per_minute=rate_per_minute)
        self._poll_interval = poll_interval_seconds
        self._poll_timeout = poll_timeout_seconds

    @classmethod
    def options_from(cls, settings: Settings) -> dict[str, Any]:
        return {
            "poll_interval_seconds": settings.POLL_INTERVAL_SECONDS,
            "poll_timeout_seconds": settings.POLL_TIMEOUT_SECONDS,
        }

    def capabilities(self, model: str) -> ModelCapabilities:
        upscale = model in ASYNC_ENDPOINTS
        return self.describe(
            model,
            max_images=1 if upscale else MAX_OUTPUTS,
            seed=True,
            negative_prompt=model not in NO_NEGATIVE_PROMPT_MODELS,
            sizes=() if upscale else ASPECT_RATIOS,
        )

    def native_styles(self, model: str) -> Collection[str]:
        return STYLE_PRESETS.keys() if ENGINES.get(model) in STYLED_ENGINES else ()

    def plan(self, model: str, spec: PromptSpec) -> StabilityPlan:
        """Validate the spec for `model` and decide every parameter of the calls."""
        check_prompt(spec, model, MAX_PROMPT_CHARS)
        upscale = model in ASYNC_ENDPOINTS
        check_count(spec, model, 1 if upscale else MAX_OUTPUTS)
        check_seeds(spec, model, *SEED_RANGE)
        from_image = spec.previous_image is not None
        styled = ENGINES.get(model) in STYLED_ENGINES
        negative = model not in NO_NEGATIVE_PROMPT_MODELS
        supported = {"seed"} | ({"style"} if styled else set()) | ({"negativePrompt"} if negative else set())
        image_to_image = from_image and not upscale
        return StabilityPlan(
            model=model,
            aspect_ratio=None if from_image else nearest_ratio(spec, ASPECT_RATIOS),
            n=spec.n,
            negative_prompt=spec.negative_prompt if negative else None,
            seed=spec.seed,
            style_preset=map_choice(spec.style, STYLE_PRESETS, model, "style") if styled else None,
            input_image_url=spec.previous_image,
            strength=(DEFAULT_STRENGTH if spec.strength is None else spec.strength) if image_to_image else None,
            ignored=_ignored(spec, supported, from_image=from_image, upscale=upscale),
        )

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        plan = self.plan(call.model, call.spec)
        if plan.asynchronous:
            return await self._generate_asynchronously(plan, call.spec.prompt, sink)
        image = await self._input_image(plan)
        started = time.monotonic()
        seeds: list[int] = []
        for index in range(plan.n):
            request = self._form_request(plan, plan.form(call.spec.prompt, index), image, accept="image/*")
            headers = await stream_image(
                self.http, LABEL, request, sink, classify=classify_stability_error, inspect=refuse_filtered_output
            )
            seeds += _seed_of(headers)
            await sink.progress((index + 1) / plan.n)
        effective = plan.effective() | ({"seeds": seeds} if seeds else {})
        return Provenance(
            seed=seeds[0] if seeds else plan.seed,
            predict_time=round(time.monotonic() - started, 3),
            effective=effective,
        )

    async def _generate_asynchronously(self, plan: StabilityPlan, prompt: str, sink: OutputSink) -> Provenance:
        """Submit once (or resume the job an earlier attempt submitted), then poll until the image is stored."""
        started = time.monotonic()
        provider_job_id = sink.remembered()
        if provider_job_id is None:
            provider_job_id = await self._submit(plan, prompt)
            sink.remember(provider_job_id)
        else:
            logger.info("resuming Stability job %s submitted by an earlier attempt", provider_job_id)
        headers = await self._wait_for_result(provider_job_id, sink)
        await sink.progress(1.0)
        seeds = _seed_of(headers)
        return Provenance(
            provider_job_id=provider_job_id,
            seed=seeds[0] if seeds else plan.seed,
            predict_time=round(time.monotonic() - started, 3),
            effective=plan.effective(),
        )

    async def _submit(self, plan: StabilityPlan, prompt: str) -> str:
        image = await self._input_image(plan)
        request = self._form_request(plan, plan.form(prompt, 0), image, accept="application/json")
        answer, _ = await fetch_json(
            self.http, LABEL, request, classify=classify_stability_error, limit=SUBMIT_ANSWER_LIMIT
        )
        provider_job_id = answer.get("id")
        if not isinstance(provider_job_id, str) or not JOB_ID.match(provider_job_id):
            raise ProviderRejected(f"Stability accepted the job without a usable id: {answer!r:.200}", type=BAD_OUTPUT)
        return provider_job_id

    async def _wait_for_result(self, provider_job_id: str, sink: OutputSink) -> httpx.Headers:
        """Poll every `poll_interval_seconds`; past the timeout a retry resumes the same job (it is remembered)."""
        deadline = time.monotonic() + self._poll_timeout
        classify = classify_result_error(provider_job_id)
        while True:
            request = self.request("GET", f"{RESULTS_PATH}/{provider_job_id}", headers={"accept": "image/*"})
            headers = await poll_image(
                self.http, LABEL, request, sink, classify=classify, inspect=refuse_filtered_output
            )
            if headers is not None:
                return headers
            if time.monotonic() >= deadline:
                raise ProviderUnavailable(
                    f"Stability job {provider_job_id} was still running after {self._poll_timeout:g} s"
                )
            await asyncio.sleep(self._poll_interval)

    async def _input_image(self, plan: StabilityPlan) -> InputImage | None:
        if plan.input_image_url is None:
            return None
        return await self.fetch_input(
            plan.input_image_url, max_bytes=MAX_INPUT_IMAGE_BYTES, accepted_types=INPUT_IMAGE_TYPES
        )

    def _form_request(
        self, plan: StabilityPlan, fields: dict[str, str], image: InputImage | None, *, accept: str
    ) -> httpx.Request:
        return self.request("POST", plan.path, files=form_parts(fields, image), headers={"accept": accept})


def _seed_of(headers: httpx.Headers) -> list[int]:
    seed = headers.get("seed", "")
    return [int(seed)] if seed.isdigit() else []
