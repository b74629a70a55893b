"""Google: Imagen (`:predict`) and Gemini image models (`:generateContent`), on the Gemini API or on Vertex AI.

The Gemini API takes `x-goog-api-key` at `{GOOGLE_BASE_URL}/v1beta/models/{model}:{method}`. Vertex AI takes an
OAuth bearer token at `/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}`;
when it is configured Imagen goes there (Google stopped serving Imagen through API keys), and Gemini models go
there too unless an API key is set. Only Vertex accepts Imagen's `negativePrompt` and `seed`.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import httpx

from core.config import Settings
from models.errors import AUTH, CONTENT_POLICY, JOB_FAILED, InvalidJobRequest, ProviderError, ProviderRejected
from models.payloads import PromptSpec, Provenance, ProviderCall
from providers.base import ModelCapabilities, OutputSink
from providers.http import (
    ErrorClassifier,
    as_object,
    classify_status,
    decode_base64,
    error_reason,
    fetch_json,
    json_answer_limit,
    parse_json,
    retry_after,
    retry_info_delay,
)
from providers.http_provider import Connection, HttpProvider
from providers.input_images import InputImage
from providers.request_checks import (
    check_count,
    check_prompt,
    check_seeds,
    map_choice,
    unused_fields,
)
from providers.sizing import nearest_ratio

LABEL = "Google"
IMAGEN_MODELS = (
    "imagen-4.0-generate-001",
    "imagen-4.0-ultra-generate-001",
    "imagen-4.0-fast-generate-001",
    "imagen-3.0-generate-002",
)
GEMINI_MODELS = ("gemini-2.5-flash-image", "gemini-3-pro-image-preview")
# Imagen edits (the previousImage as a raw reference image) exist on Vertex AI only.
IMAGEN_EDIT_MODEL = "imagen-3.0-capability-001"
PREDICT_MODELS = (*IMAGEN_MODELS, IMAGEN_EDIT_MODEL)
INPUT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_INPUT_IMAGE_BYTES = 20 * 1024 * 1024  # the Gemini API's limit for a whole inline request
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGEN_MAX_OUTPUTS = 4
SINGLE_OUTPUT_MODELS = frozenset({"imagen-4.0-ultra-generate-001"})
GEMINI_MAX_OUTPUTS = 4  # one generateContent call per image
MAX_PROMPT_CHARS = 32000  # Google limits prompts in tokens; this only stops absurd input before a call
VERTEX_SEED_RANGE = (0, 2**31 - 1)
# `sampleImageSize` exists on the standard and ultra Imagen 4 models only.
SIZED_IMAGEN_MODELS = frozenset({"imagen-4.0-generate-001", "imagen-4.0-ultra-generate-001"})
IMAGEN_QUALITY = {"auto": "1K", "low": "1K", "medium": "1K", "standard": "1K", "high": "2K", "hd": "2K"}
BLOCKED_FINISH_REASONS = frozenset(
    {
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_OTHER",
        "NO_IMAGE",
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
    }
)
# Some safety blocks arrive as 400 INVALID_ARGUMENT; their message is the only sign.
SAFETY_MESSAGE = re.compile(r"responsible ai|safety (?:filter|system|setting)|sensitive words|usage guidelines", re.I)
AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "ACCESS_TOKEN_EXPIRED"})


def classify_google_error(response: httpx.Response, body: bytes, *, key_setting: str) -> ProviderError:
    """Google's `{"error": {"code", "message", "status", "details"}}` answers, classified once."""
    payload = parse_json(body)
    error = as_object(as_object(payload).get("error"))
    status_name = str(error.get("status") or "")
    message = error_reason(error.get("message"), body)
    reason = f"{status_name}: {message}" if status_name else message
    if response.status_code == 400 and SAFETY_MESSAGE.search(message):
        return ProviderRejected(f"Google refused the prompt ({reason}). Rephrase the prompt.", type=CONTENT_POLICY)
    if _error_info_reasons(error) & AUTH_REASONS:
        return ProviderRejected(f"Google rejected the credentials ({reason}). Check {key_setting}.", type=AUTH)
    hint = retry_info_delay(payload) or retry_after(response.headers)
    return classify_status(LABEL, response.status_code, reason, retry_after=hint, key_setting=key_setting)


def _error_info_reasons(error: dict[str, Any]) -> set[str]:
    details = error.get("details")
    return {
        str(detail.get("reason"))
        for detail in (details if isinstance(details, list) else [])
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("google.rpc.ErrorInfo")
    }


@dataclass(frozen=True)
class GooglePlan:
    """What will be sent for one job, derived once from the spec."""

    model: str
    vertex: bool
    aspect_ratio: str
    n: int
    negative_prompt: str | None
    seed: int | None
    sample_image_size: str | None
    ignored: tuple[str, ...]

    @property
    def imagen(self) -> bool:
        return self.model in PREDICT_MODELS

    def predict_body(self, prompt: str, image: InputImage | None = None) -> dict[str, Any]:
        instance: dict[str, Any] = {"prompt": prompt}
        parameters: dict[str, Any] = {"sampleCount": self.n, "includeRaiReason": True}
        if image is None:
            parameters["aspectRatio"] = self.aspect_ratio
        else:  # an edit keeps the input's shape
            instance["referenceImages"] = [
                {
                    "referenceType": "REFERENCE_TYPE_RAW",
                    "referenceId": 1,
                    "referenceImage": {"bytesBase64Encoded": base64.b64encode(image.data).decode()},
                }
            ]
            parameters["editMode"] = "EDIT_MODE_DEFAULT"
        if self.sample_image_size:
            parameters["sampleImageSize"] = self.sample_image_size
        if self.negative_prompt:
            parameters["negativePrompt"] = self.negative_prompt
        if self.seed is not None:
            # Vertex ignores the seed while it watermarks, and it watermarks by default.
            parameters.update(seed=self.seed, addWatermark=False)
        return {"instances": [instance], "parameters": parameters}

    def generate_content_body(self, prompt: str, image: InputImage | None = None) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": prompt}]
        if image is not None:
            parts.append(
                {"inlineData": {"mimeType": image.content_type, "data": base64.b64encode(image.data).decode()}}
            )
        return {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {
                "responseModalities": ["TEXT", "IMAGE"],
                "imageConfig": {"aspectRatio": self.aspect_ratio},
            },
        }

    def effective(self) -> dict[str, Any]:
        effective: dict[str, Any] = {
            "aspectRatio": self.aspect_ratio,
            "n": self.n,
            "api": "vertex" if self.vertex else "gemini",
        }
        if self.sample_image_size:
            effective["sampleImageSize"] = self.sample_image_size
        if self.seed is not None:
            effective["seed"] = self.seed
        if self.ignored:
            effective["ignored"] = list(self.ignored)
        return effective


class GoogleProvider(HttpProvider):
    """Imagen and Gemini image models (synchronous), on the Gemini API or Vertex AI."""

    name: ClassVar[str] = "google"
    models: tuple[str, ...] = PREDICT_MODELS + GEMINI_MODELS
    input_image_models: frozenset[str] = frozenset({*GEMINI_MODELS, IMAGEN_EDIT_MODEL})
    input_image_required_models: frozenset[str] = frozenset({IMAGEN_EDIT_MODEL})
    default_model: str = "imagen-4.0-generate-001"
    description: ClassVar[str] = "Google Imagen (predict) and Gemini image models (generateContent)."

    label: ClassVar[str] = LABEL
    key_setting: ClassVar[str | None] = "GOOGLE_API_KEY"
    base_url_setting: ClassVar[str] = "GOOGLE_BASE_URL"
    rate_setting: ClassVar[str | None] = "GOOGLE_RATE_PER_MINUTE"

    def __init__(
        self,
        connection: Connection,
        *,
        rate_per_minute: float | None = None,
        vertex_project: str | None = None,
        vertex_location: str = "us-central1",
        vertex_token: str | None = None,
        vertex_base_url: str | None = None,
    ) -> None:
        super().__init__(connection, rate_per_minute=rate_per_minute)
        self._vertex_project = vertex_project
        self._vertex_location = vertex_location
        self._vertex_token = vertex_token
        self._vertex_base_url = (vertex_base_url or _vertex_host(vertex_location)).rstrip("/")

    @classmethod
    def options_from(cls, settings: Settings) -> dict[str, Any]:
        return {
            "vertex_project": settings.GOOGLE_VERTEX_PROJECT,
            "vertex_location": settings.GOOGLE_VERTEX_LOCATION,
            "vertex_token": settings.GOOGLE_VERTEX_TOKEN,
            "vertex_base_url": settings.GOOGLE_VERTEX_BASE_URL,
        }

    @property
    def _vertex_ready(self) -> bool:
        return bool(self._vertex_project and self._vertex_token)

    def disabled_reason(self) -> str | None:
        if self.api_key or self._vertex_ready:
            return None
        return "GOOGLE_API_KEY is not set (nor GOOGLE_VERTEX_PROJECT with GOOGLE_VERTEX_TOKEN)"

    def capabilities(self, model: str) -> ModelCapabilities:
        vertex_imagen = model in PREDICT_MODELS and self.uses_vertex(model)
        max_images = 1 if model in SINGLE_OUTPUT_MODELS else IMAGEN_MAX_OUTPUTS if model in PREDICT_MODELS else 4
        ratios = IMAGEN_RATIOS if model in IMAGEN_MODELS else GEMINI_RATIOS if model in GEMINI_MODELS else ()
        return self.describe(
            model, max_images=max_images, seed=vertex_imagen, negative_prompt=vertex_imagen, sizes=ratios
        )

    def uses_vertex(self, model: str) -> bool:
        return self._vertex_ready and (model in PREDICT_MODELS or not self.api_key)

    def plan(self, model: str, spec: PromptSpec) -> GooglePlan:
        """Validate the spec for `model` and decide every parameter of the call."""
        check_prompt(spec, model, MAX_PROMPT_CHARS)
        if model == IMAGEN_EDIT_MODEL and not self._vertex_ready:
            raise InvalidJobRequest(
                f"{model} edits on Vertex AI only; set GOOGLE_VERTEX_PROJECT and GOOGLE_VERTEX_TOKEN, or use "
                f"{' or '.join(GEMINI_MODELS)}",
                field="model",
            )
        imagen = model in PREDICT_MODELS
        max_outputs = IMAGEN_MAX_OUTPUTS if imagen else GEMINI_MAX_OUTPUTS
        check_count(spec, model, 1 if model in SINGLE_OUTPUT_MODELS else max_outputs)
        vertex_imagen = imagen and self.uses_vertex(model)
        if vertex_imagen:
            check_seeds(spec, model, *VERTEX_SEED_RANGE)
        sized = model in SIZED_IMAGEN_MODELS
        supported = {"negativePrompt", "seed"} if vertex_imagen else set()
        return GooglePlan(
            model=model,
            vertex=self.uses_vertex(model),
            aspect_ratio=nearest_ratio(spec, IMAGEN_RATIOS if imagen else GEMINI_RATIOS),
            n=spec.n,
            negative_prompt=spec.negative_prompt if vertex_imagen else None,
            seed=spec.seed if vertex_imagen else None,
            sample_image_size=map_choice(spec.quality, IMAGEN_QUALITY, model, "quality") if sized else None,
            ignored=tuple(unused_fields(spec, supported | ({"quality"} if sized else set()))),
        )

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        plan = self.plan(call.model, call.spec)
        started = time.monotonic()
        response_id, effective = None, plan.effective()
        image = await self._input_image(call.spec.previous_image)
        if plan.imagen:
            filtered = await self._predict(plan, call.spec.prompt, image, sink)
            if filtered:
                effective["filtered"] = filtered
        else:
            response_id = await self._generate_content(plan, call.spec.prompt, image, sink)
        return Provenance(
            provider_job_id=response_id,
            predict_time=round(time.monotonic() - started, 3),
            effective=effective,
        )

    async def _input_image(self, url: str | None) -> InputImage | None:
        if url is None:
            return None
        return await self.fetch_input(url, max_bytes=MAX_INPUT_IMAGE_BYTES, accepted_types=INPUT_IMAGE_TYPES)

    async def _predict(self, plan: GooglePlan, prompt: str, image: InputImage | None, sink: OutputSink) -> int:
        """Store the images Imagen returned; answer how many of the `n` its safety filters removed."""
        payload = await self._call(plan, "predict", plan.predict_body(prompt, image), images=plan.n)
        predictions = [item for item in payload.get("predictions") or [] if isinstance(item, dict)]
        images = [item for item in predictions if isinstance(item.get("bytesBase64Encoded"), str)]
        if not images:
            raise ProviderRejected(_all_filtered_message(predictions), type=CONTENT_POLICY)
        for item in images:
            await sink.store_bytes(decode_base64(LABEL, item["bytesBase64Encoded"]))
        return max(plan.n - len(images), 0)

    async def _generate_content(
        self, plan: GooglePlan, prompt: str, image: InputImage | None, sink: OutputSink
    ) -> str | None:
        """Gemini makes one image per call, so `n` images take `n` calls (an input image rides in each)."""
        first_response_id: str | None = None
        body = plan.generate_content_body(prompt, image)
        for index in range(plan.n):
            payload = await self._call(plan, "generateContent", body, images=1)
            await sink.store_bytes(_gemini_image(payload))
            if index == 0 and isinstance(payload.get("responseId"), str):
                first_response_id = payload["responseId"]
            await sink.progress((index + 1) / plan.n)
        return first_response_id

    async def _call(self, plan: GooglePlan, method: str, body: dict[str, Any], *, images: int) -> dict[str, Any]:
        if plan.vertex:
            url = (
                f"{self._vertex_base_url}/v1/projects/{self._vertex_project}/locations/{self._vertex_location}"
                f"/publishers/google/models/{plan.model}:{method}"
            )
            headers, key_setting = {"authorization": f"Bearer {self._vertex_token}"}, "GOOGLE_VERTEX_TOKEN"
        else:
            url = f"{self.base_url}/v1beta/models/{plan.model}:{method}"
            headers, key_setting = {"x-goog-api-key": self.api_key or ""}, "GOOGLE_API_KEY"
        classify: ErrorClassifier = partial(classify_google_error, key_setting=key_setting)
        request = self.http.build_request(
            "POST", url, json=body, headers=headers, timeout=self.connection.timeout_seconds
        )
        limit = json_answer_limit(self.connection.max_image_bytes, images)
        payload, _ = await fetch_json(self.http, LABEL, request, classify=classify, limit=limit)
        return payload


def _vertex_host(location: str) -> str:
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _all_filtered_message(predictions: list[dict[str, Any]]) -> str:
    reasons = [str(item["raiFilteredReason"]) for item in predictions if item.get("raiFilteredReason")]
    why = f": {'; '.join(reasons)}" if reasons else ""
    return f"Google's safety filters removed every image (raiFilteredReason){why}. Rephrase the prompt."


def _gemini_image(payload: dict[str, Any]) -> bytes:
    """The first inline image of a generateContent answer, or the reason there is none."""
    _refuse_blocked_prompt(as_object(payload.get("promptFeedback")))
    texts: list[str] = []
    finish_reason = ""
    for candidate in map(as_object, payload.get("candidates") or []):
        finish_reason = finish_reason or str(candidate.get("finishReason") or "")
        for part in map(as_object, as_object(candidate.get("content")).get("parts") or []):
            inline = as_object(part.get("inlineData") or part.get("inline_data"))
            if isinstance(inline.get("data"), str):
                return decode_base64(LABEL, inline["data"])
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
        if candidate.get("finishMessage"):
            texts.append(str(candidate["finishMessage"]))
    said = error_reason(" ".join(texts), b"")
    explained = f": {said}" if said else ""
    if finish_reason in BLOCKED_FINISH_REASONS:
        message = f"Google did not return an image (finishReason {finish_reason}){explained}. Rephrase the prompt."
        raise ProviderRejected(message, type=CONTENT_POLICY)
    raise ProviderRejected(f"Gemini answered without an image{explained}", type=JOB_FAILED)


def _refuse_blocked_prompt(feedback: dict[str, Any]) -> None:
    if not feedback.get("blockReason"):
        return
    detail = error_reason(feedback.get("blockReasonMessage"), b"")
    explained = f": {detail}" if detail else ""
    message = f"Google blocked the prompt (blockReason {feedback['blockReason']}){explained}. Rephrase the prompt."
    raise ProviderRejected(message, type=CONTENT_POLICY)
