"""Google: Gemini image models (`:generateContent`), on the Gemini API or on Vertex AI.

The Gemini API takes `x-goog-api-key` at `{GOOGLE_BASE_URL}/v1beta/models/{model}:generateContent`. Vertex AI
takes an OAuth bearer token at `/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:...`,
used when it is configured and no API key is set. Every Imagen model was shut down by 2026-08-17 (Gemini API and
Vertex AI alike); the catalog refuses them before any call, so there is no Imagen code here.
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
from models.errors import AUTH, CONTENT_POLICY, JOB_FAILED, ModelUnavailable, ProviderError, ProviderRejected
from models.payloads import PromptSpec, Provenance, ProviderCall
from providers.base import ModelCapabilities, OutputSink
from providers.catalog import CATALOG
from providers.classify import ErrorClassifier, as_object, classify_status, error_reason, retry_after, retry_info_delay
from providers.http_base import Connection, HttpProvider
from providers.input_images import InputImage
from providers.request_checks import check_count, check_prompt, map_choice, unused_fields
from providers.sizing import nearest_ratio
from providers.transfer import MODEL_LIST_LIMIT, decode_base64, fetch_json, json_answer_limit, parse_json

LABEL = "Google"
INPUT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_INPUT_IMAGE_BYTES = 20 * 1024 * 1024  # the Gemini API's limit for a whole inline request
RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
MAX_OUTPUTS = 4  # one generateContent call per image
MAX_PROMPT_CHARS = 32000  # Google limits prompts in tokens; this only stops absurd input before a call
# The job's quality words as Gemini 3.x `imageConfig.imageSize` (uppercase K; 1K is Google's default).
IMAGE_SIZES = {"auto": "1K", "low": "1K", "medium": "1K", "standard": "1K", "high": "2K", "hd": "2K", "max": "4K"}
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


def classify_google_error(response: httpx.Response, body: bytes, *, key_setting: str, model: str = "") -> ProviderError:
    """Google's `{"error": {"code", "message", "status", "details"}}` answers, classified once."""
    payload = parse_json(body)
    error = as_object(as_object(payload).get("error"))
    status_name = str(error.get("status") or "")
    message = error_reason(error.get("message"), body)
    reason = f"{status_name}: {message}" if status_name else message
    if response.status_code == 400 and SAFETY_MESSAGE.search(message):
        return ProviderRejected(f"Google refused the prompt ({reason}). Rephrase the prompt.", type=CONTENT_POLICY)
    if response.status_code == 404 and status_name == "NOT_FOUND" and model:
        return ModelUnavailable(LABEL, model, reason)
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
    image_size: str | None
    n: int
    ignored: tuple[str, ...]

    def body(self, prompt: str, image: InputImage | None = None) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": prompt}]
        if image is not None:
            parts.append(
                {"inlineData": {"mimeType": image.content_type, "data": base64.b64encode(image.data).decode()}}
            )
        image_config: dict[str, Any] = {"aspectRatio": self.aspect_ratio}
        if self.image_size:
            image_config["imageSize"] = self.image_size
        return {
            "contents": [{"role": "user", "parts": parts}],
            "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": image_config},
        }

    def effective(self) -> dict[str, Any]:
        effective: dict[str, Any] = {
            "aspectRatio": self.aspect_ratio,
            "n": self.n,
            "api": "vertex" if self.vertex else "gemini",
        }
        if self.image_size:
            effective["imageSize"] = self.image_size
        if self.ignored:
            effective["ignored"] = list(self.ignored)
        return effective


class GoogleProvider(HttpProvider):
    """Gemini image models (synchronous), on the Gemini API or Vertex AI."""

    name: ClassVar[str] = "google"
    models: tuple[str, ...] = CATALOG.usable("google")
    default_model: str = "gemini-3.1-flash-image"
    description: ClassVar[str] = "Google Gemini image models (Nano Banana; generateContent), Gemini API or Vertex AI."
    lists_models: ClassVar[bool] = True

    label: ClassVar[str] = LABEL
    settings_prefix: ClassVar[str] = "GOOGLE"

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
            "vertex_project": cls.own_setting(settings, "VERTEX_PROJECT"),
            "vertex_location": cls.own_setting(settings, "VERTEX_LOCATION"),
            "vertex_token": cls.own_setting(settings, "VERTEX_TOKEN"),
            "vertex_base_url": cls.own_setting(settings, "VERTEX_BASE_URL"),
        }

    @property
    def _vertex_ready(self) -> bool:
        return bool(self._vertex_project and self._vertex_token)

    @property
    def uses_vertex(self) -> bool:
        return self._vertex_ready and not self.api_key

    def disabled_reason(self) -> str | None:
        if self.api_key or self._vertex_ready:
            return None
        return "GOOGLE_API_KEY is not set (nor GOOGLE_VERTEX_PROJECT with GOOGLE_VERTEX_TOKEN)"

    def takes_input_image(self, model: str) -> bool:
        return True  # every Gemini image model edits from an image in the request

    def capabilities(self, model: str) -> ModelCapabilities:
        return self.describe(model, max_images=MAX_OUTPUTS, seed=False, negative_prompt=False, sizes=RATIOS)

    def plan(self, model: str, spec: PromptSpec) -> GooglePlan:
        """Validate the spec for `model` and decide every parameter of the call."""
        check_prompt(spec, model, MAX_PROMPT_CHARS)
        check_count(spec, model, MAX_OUTPUTS)
        return GooglePlan(
            model=model,
            vertex=self.uses_vertex,
            aspect_ratio=nearest_ratio(spec, RATIOS),
            image_size=map_choice(spec.quality, IMAGE_SIZES, model, "quality") or "1K",
            n=spec.n,
            ignored=tuple(unused_fields(spec, {"quality"})),
        )

    def check_model_request(self, model: str, spec: PromptSpec) -> dict[str, Any]:
        return self.plan(model, spec).effective()

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        """Gemini makes one image per call, so `n` images take `n` calls (an input image rides in each)."""
        plan = self.plan(call.model, call.spec)
        started = time.monotonic()
        image = await self._input_image(call.spec.previous_image)
        body = plan.body(call.spec.prompt, image)
        first_response_id: str | None = None
        costs: list[float | None] = []
        for index in range(plan.n):
            payload = await self._call(plan, body, images=1)
            await sink.store_bytes(_gemini_image(payload))
            costs.append(usage_cost(plan.model, as_object(payload.get("usageMetadata"))))
            if index == 0 and isinstance(payload.get("responseId"), str):
                first_response_id = payload["responseId"]
            await sink.progress((index + 1) / plan.n)
        return Provenance(
            provider_job_id=first_response_id,
            predict_time=round(time.monotonic() - started, 3),
            effective=plan.effective(),
            cost_usd=None if None in costs else round(sum(cost or 0 for cost in costs), 6),
        )

    async def list_models(self) -> list[str]:
        """`GET /v1beta/models` (every page): the models this key may call, without their `models/` prefix."""
        names: list[str] = []
        token = ""
        while True:
            url = f"{self.base_url}/v1beta/models?pageSize=1000" + (f"&pageToken={token}" if token else "")
            request = self.http.build_request("GET", url, headers={"x-goog-api-key": self.api_key or ""})
            classify: ErrorClassifier = partial(classify_google_error, key_setting=self.setting_name("API_KEY"))
            payload, _ = await fetch_json(self.http, LABEL, request, classify=classify, limit=MODEL_LIST_LIMIT)
            for item in map(as_object, payload.get("models") or []):
                names.append(str(item.get("name") or "").removeprefix("models/"))
            token = str(payload.get("nextPageToken") or "")
            if not token:
                return [name for name in names if name]

    async def _input_image(self, url: str | None) -> InputImage | None:
        if url is None:
            return None
        return await self.fetch_input(url, max_bytes=MAX_INPUT_IMAGE_BYTES, accepted_types=INPUT_IMAGE_TYPES)

    async def _call(self, plan: GooglePlan, body: dict[str, Any], *, images: int) -> dict[str, Any]:
        if plan.vertex:
            url = (
                f"{self._vertex_base_url}/v1/projects/{self._vertex_project}/locations/{self._vertex_location}"
                f"/publishers/google/models/{plan.model}:generateContent"
            )
            headers, key_setting = {"authorization": f"Bearer {self._vertex_token}"}, self.setting_name("VERTEX_TOKEN")
        else:
            url = f"{self.base_url}/v1beta/models/{plan.model}:generateContent"
            headers, key_setting = {"x-goog-api-key": self.api_key or ""}, self.setting_name("API_KEY")
        classify: ErrorClassifier = partial(classify_google_error, key_setting=key_setting, model=plan.model)
        request = self.http.build_request(
            "POST", url, json=body, headers=headers, timeout=self.connection.timeout_seconds
        )
        limit = json_answer_limit(self.connection.max_image_bytes, images)
        payload, _ = await fetch_json(self.http, LABEL, request, classify=classify, limit=limit)
        return payload


def usage_cost(model: str, usage: dict[str, Any]) -> float | None:
    """What one generateContent call costs, from its `usageMetadata`: prompt tokens at the input rate, and the
    candidates' IMAGE tokens at the image output rate."""
    price = CATALOG.price_of("google", model)
    if not usage or price is None:
        return None
    details = [as_object(item) for item in usage.get("candidatesTokensDetails") or []]
    image_out = sum(int(item.get("tokenCount") or 0) for item in details if item.get("modality") == "IMAGE")
    if not image_out:
        return None
    return price.of_tokens(text_in=int(usage.get("promptTokenCount") or 0), image_out=image_out)


def _vertex_host(location: str) -> str:
    if location == "global":
        return "https://aiplatform.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


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
