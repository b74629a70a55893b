"""OpenAI Images: `POST {OPENAI_BASE_URL}/images/generations` for DALL-E 2, DALL-E 3 and the GPT image models, and
`POST /images/edits` (multipart, the previous image's bytes as `image`) when a job has a previousImage.

DALL-E answers with URLs (valid 60 minutes) or base64 as `OPENAI_RESPONSE_FORMAT` asks; GPT image models always
answer with base64. Either way the images go straight to the sink.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import httpx

from core.config import Settings
from models.errors import AUTH, BAD_OUTPUT, CONTENT_POLICY, ProviderError, ProviderRejected, ProviderUnavailable
from models.payloads import PromptSpec, Provenance, ProviderCall
from providers.base import ModelCapabilities, OutputSink
from providers.http import (
    as_object,
    classify_status,
    decode_base64,
    error_reason,
    fetch_json,
    json_answer_limit,
    parse_json,
    retry_after,
)
from providers.http_provider import Connection, HttpProvider
from providers.input_images import form_parts
from providers.request_checks import (
    check_count,
    check_prompt,
    map_choice,
    unused_fields,
)
from providers.sizing import nearest_size

LABEL = "OpenAI"
DALL_E_2 = "dall-e-2"
DALL_E_3 = "dall-e-3"
GPT_IMAGE_MODELS = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2")

SIZES = {
    DALL_E_2: ("256x256", "512x512", "1024x1024"),
    DALL_E_3: ("1024x1024", "1792x1024", "1024x1792"),
}
GPT_SIZES = ("1024x1024", "1536x1024", "1024x1536")
PROMPT_LIMITS = {DALL_E_2: 1000, DALL_E_3: 4000}
GPT_PROMPT_LIMIT = 32000
MAX_OUTPUTS = {DALL_E_3: 1}
DEFAULT_MAX_OUTPUTS = 10

# The job's quality words, in each model family's vocabulary.
GPT_QUALITY = {"auto": "auto", "low": "low", "medium": "medium", "standard": "medium", "high": "high", "hd": "high"}
DALL_E_3_QUALITY = {
    "auto": "standard",
    "low": "standard",
    "medium": "standard",
    "standard": "standard",
    "high": "hd",
    "hd": "hd",
}
DALL_E_3_STYLES = {"vivid": "vivid", "natural": "natural"}
SUPPORTED_FIELDS = {DALL_E_2: (), DALL_E_3: ("quality", "style")}  # GPT image models: quality only
# previousImage goes to POST /images/edits, as the image's bytes in a multipart part. DALL-E 2 edits take a PNG.
EDIT_MODELS = frozenset({DALL_E_2, *GPT_IMAGE_MODELS})
EDIT_IMAGE_TYPES = {DALL_E_2: ("image/png",)}
GPT_EDIT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_EDIT_IMAGE_BYTES = {DALL_E_2: 4 * 1024 * 1024}
GPT_MAX_EDIT_IMAGE_BYTES = 50 * 1024 * 1024
MODERATION_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
RETRYABLE_STATUSES = (409,)  # the official SDK retries conflicts (lock timeouts) as well


def classify_openai_error(response: httpx.Response, body: bytes) -> ProviderError:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}` answers, classified once."""
    payload = as_object(parse_json(body))
    error = as_object(payload.get("error"))
    code = error.get("code")
    # GPT image models may leave `code` null on a moderation block; their error type and details still say so.
    moderation = error.get("moderation_details") or payload.get("moderation_details")
    if code in MODERATION_CODES or (error.get("type") == "image_generation_user_error" and moderation):
        return ProviderRejected(_moderation_message(error, moderation), type=CONTENT_POLICY)
    reason = error_reason(error.get("message"), body) + (f" ({code})" if code else "")
    if code == "insufficient_quota":
        return ProviderRejected(f"OpenAI has no quota left: {reason}. Check the plan and billing.", type=AUTH)
    hint = retry_after(response.headers)
    if response.headers.get("x-should-retry") == "true":
        return ProviderUnavailable(f"OpenAI answered HTTP {response.status_code}: {reason}", retry_after=hint)
    return classify_status(
        LABEL,
        response.status_code,
        reason,
        retry_after=hint,
        retryable=RETRYABLE_STATUSES,
        key_setting="OPENAI_API_KEY",
    )


def _moderation_message(error: dict[str, Any], moderation: Any) -> str:
    labels = [str(error.get("code") or "moderation_blocked")]
    if isinstance(moderation, dict):
        categories = moderation.get("categories") or []
        if categories:
            labels.append("categories: " + ", ".join(str(category) for category in categories))
        if moderation.get("moderation_stage"):
            labels.append(f"stage: {moderation['moderation_stage']}")
    reason = error_reason(error.get("message"), b"")
    explained = f": {reason}" if reason else ""
    return f"OpenAI refused the prompt ({'; '.join(labels)}){explained}. Rephrase the prompt."


@dataclass(frozen=True)
class OpenAIPlan:
    """What will be sent for one job, derived once from the spec."""

    model: str
    size: str
    n: int
    quality: str | None
    style: str | None
    response_format: str | None
    ignored: tuple[str, ...]

    def body(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "n": self.n, "size": self.size}
        optional = {"quality": self.quality, "style": self.style, "response_format": self.response_format}
        body.update({name: value for name, value in optional.items() if value is not None})
        if self.model in GPT_IMAGE_MODELS:
            body["output_format"] = "png"
        return body

    def effective(self) -> dict[str, Any]:
        effective: dict[str, Any] = {"size": self.size, "n": self.n}
        effective.update({name: value for name, value in (("quality", self.quality), ("style", self.style)) if value})
        if self.ignored:
            effective["ignored"] = list(self.ignored)
        return effective


class OpenAIProvider(HttpProvider):
    """OpenAI Images (synchronous): DALL-E 2, DALL-E 3 and the GPT image models."""

    name: ClassVar[str] = "openai"
    models: tuple[str, ...] = (DALL_E_2, DALL_E_3, *GPT_IMAGE_MODELS)
    default_model: str = "gpt-image-1"
    description: ClassVar[str] = "OpenAI Images API: DALL-E 2, DALL-E 3 and GPT image models."
    input_image_models: frozenset[str] = EDIT_MODELS

    label: ClassVar[str] = LABEL
    key_setting: ClassVar[str | None] = "OPENAI_API_KEY"
    base_url_setting: ClassVar[str] = "OPENAI_BASE_URL"
    rate_setting: ClassVar[str | None] = "OPENAI_RATE_PER_MINUTE"

    def __init__(
        self,
        connection: Connection,
        *,
        rate_per_minute: float | None = None,
        response_format: Literal["url", "b64_json"] = "url",
    ) -> None:
        super().__init__(connection, rate_per_minute=rate_per_minute)
        self._response_format = response_format

    @classmethod
    def options_from(cls, settings: Settings) -> dict[str, Any]:
        return {"response_format": settings.OPENAI_RESPONSE_FORMAT}

    def capabilities(self, model: str) -> ModelCapabilities:
        sizes = GPT_SIZES if model in GPT_IMAGE_MODELS else SIZES[model]
        return self.describe(
            model,
            max_images=MAX_OUTPUTS.get(model, DEFAULT_MAX_OUTPUTS),
            seed=False,
            negative_prompt=False,
            sizes=sizes,
        )

    def native_styles(self, model: str) -> Collection[str]:
        return DALL_E_3_STYLES.keys() if model == DALL_E_3 else ()

    def plan(self, model: str, spec: PromptSpec) -> OpenAIPlan:
        """Validate the spec for `model` and decide every parameter of the call."""
        check_prompt(spec, model, PROMPT_LIMITS.get(model, GPT_PROMPT_LIMIT))
        check_count(spec, model, MAX_OUTPUTS.get(model, DEFAULT_MAX_OUTPUTS))
        gpt = model in GPT_IMAGE_MODELS
        quality_words = GPT_QUALITY if gpt else DALL_E_3_QUALITY if model == DALL_E_3 else None
        supported = set(SUPPORTED_FIELDS.get(model, ("quality",)))
        return OpenAIPlan(
            model=model,
            size=nearest_size(spec, GPT_SIZES if gpt else SIZES[model]),
            n=spec.n,
            quality=map_choice(spec.quality, quality_words, model, "quality") if quality_words else None,
            style=map_choice(spec.style, DALL_E_3_STYLES, model, "style") if model == DALL_E_3 else None,
            response_format=None if gpt else self._response_format,
            ignored=tuple(unused_fields(spec, supported)),
        )

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        plan = self.plan(call.model, call.spec)
        started = time.monotonic()
        if call.spec.previous_image:
            request = await self._edit_request(plan, call.spec.prompt, call.spec.previous_image)
        else:
            request = self.request("POST", "/images/generations", json=plan.body(call.spec.prompt))
        payload, headers = await fetch_json(
            self.http,
            LABEL,
            request,
            classify=classify_openai_error,
            limit=json_answer_limit(self.connection.max_image_bytes, plan.n),
        )
        items = [item for item in payload.get("data") or [] if isinstance(item, dict)]
        if not items:
            raise ProviderRejected("OpenAI answered without any image", type=BAD_OUTPUT)
        for item in items:
            await _store_item(item, sink)
        revised = items[0].get("revised_prompt")
        return Provenance(
            provider_job_id=headers.get("x-request-id"),
            revised_prompt=revised if isinstance(revised, str) else None,
            predict_time=round(time.monotonic() - started, 3),
            effective=plan.effective(),
        )

    async def _edit_request(self, plan: OpenAIPlan, prompt: str, image_url: str) -> httpx.Request:
        """`POST /images/edits`: the plan's fields as form fields, the previous image's bytes as the `image` part
        (fetched here, inside the activity, so they never enter workflow history)."""
        image = await self.fetch_input(
            image_url,
            max_bytes=MAX_EDIT_IMAGE_BYTES.get(plan.model, GPT_MAX_EDIT_IMAGE_BYTES),
            accepted_types=EDIT_IMAGE_TYPES.get(plan.model, GPT_EDIT_IMAGE_TYPES),
        )
        fields = {name: str(value) for name, value in plan.body(prompt).items() if name != "style"}
        return self.request("POST", "/images/edits", files=form_parts(fields, image))


async def _store_item(item: dict[str, Any], sink: OutputSink) -> None:
    if isinstance(item.get("b64_json"), str):
        await sink.store_bytes(decode_base64(LABEL, item["b64_json"]))
    elif isinstance(item.get("url"), str):
        await sink.store_url(item["url"])
    else:
        raise ProviderRejected("OpenAI answered with an image that has neither b64_json nor url", type=BAD_OUTPUT)
