"""OpenAI Images: `POST {OPENAI_BASE_URL}/images/generations` for the GPT image models, and `POST /images/edits`
(multipart, the previous image's bytes as `image`) when a job has a previousImage.

GPT image models answer with base64 (a URL is stored too, should an answer carry one); the images go straight to
the sink, and the answer's `usage` tokens price the job. DALL-E 2 and 3 were shut down on 2026-05-12; the catalog
refuses them before any call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import httpx

from models.errors import (
    AUTH,
    BAD_OUTPUT,
    CONTENT_POLICY,
    RATE_LIMITED,
    SERVER_ERROR,
    ModelUnavailable,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
)
from models.payloads import PromptSpec, Provenance, ProviderCall
from providers.base import ModelCapabilities, OutputSink
from providers.catalog import CATALOG
from providers.classify import as_object, classify_status, error_reason, retry_after
from providers.http_base import HttpProvider
from providers.input_images import form_parts
from providers.request_checks import (
    check_count,
    check_prompt,
    map_choice,
    unused_fields,
)
from providers.sizing import nearest_size
from providers.transfer import MODEL_LIST_LIMIT, decode_base64, fetch_json, json_answer_limit, parse_json

LABEL = "OpenAI"
# Every GPT image model (gpt-image-2, -2.5-flare, ... and those discovery finds) takes the same request; the
# catalog (providers/catalog.toml) says which ids exist and which are shut down.
SIZES = ("1024x1024", "1536x1024", "1024x1536")
PROMPT_LIMIT = 32000
MAX_OUTPUTS = 10
# The job's quality words in OpenAI's vocabulary; the 2.5 models add xhigh and max.
QUALITY = {
    "auto": "auto",
    "low": "low",
    "medium": "medium",
    "standard": "medium",
    "high": "high",
    "hd": "high",
    "xhigh": "xhigh",
    "max": "max",
}
# previousImage goes to POST /images/edits, as the image's bytes in a multipart part.
EDIT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_EDIT_IMAGE_BYTES = 50 * 1024 * 1024
MODERATION_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
RETRYABLE_STATUSES = (409,)  # the official SDK retries conflicts (lock timeouts) as well
# A shut-down or unknown id: 404 invalid_request_error with this code (the deprecations page, and the answers
# clients of dall-e-3 got after 2026-05-12).
MODEL_NOT_FOUND = "model_not_found"


def classify_openai_error(response: httpx.Response, body: bytes, *, model: str = "") -> ProviderError:
    """OpenAI's `{"error": {"message", "type", "param", "code"}}` answers, classified once."""
    payload = as_object(parse_json(body))
    error = as_object(payload.get("error"))
    code = error.get("code")
    # GPT image models may leave `code` null on a moderation block; their error type and details still say so.
    moderation = error.get("moderation_details") or payload.get("moderation_details")
    if code in MODERATION_CODES or (error.get("type") == "image_generation_user_error" and moderation):
        return ProviderRejected(_moderation_message(error, moderation), type=CONTENT_POLICY)
    reason = error_reason(error.get("message"), body) + (f" ({code})" if code else "")
    if code == MODEL_NOT_FOUND:
        return ModelUnavailable(LABEL, model or str(error.get("param") or "?"), reason)
    if code == "insufficient_quota":
        return ProviderRejected(f"OpenAI has no quota left: {reason}. Check the plan and billing.", type=AUTH)
    hint = retry_after(response.headers)
    if response.headers.get("x-should-retry") == "true":
        cause = RATE_LIMITED if response.status_code == 429 else SERVER_ERROR
        return ProviderUnavailable(
            f"OpenAI answered HTTP {response.status_code}: {reason}", retry_after=hint, cause=cause
        )
    return classify_status(
        LABEL,
        response.status_code,
        reason,
        retry_after=hint,
        retryable=RETRYABLE_STATUSES,
        key_setting=OpenAIProvider.key_setting,
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
    ignored: tuple[str, ...]

    def body(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "n": self.n, "size": self.size}
        if self.quality is not None:
            body["quality"] = self.quality
        body["output_format"] = "png"
        return body

    def effective(self) -> dict[str, Any]:
        effective: dict[str, Any] = {"size": self.size, "n": self.n}
        if self.quality:
            effective["quality"] = self.quality
        if self.ignored:
            effective["ignored"] = list(self.ignored)
        return effective


class OpenAIProvider(HttpProvider):
    """OpenAI Images (synchronous): the GPT image models."""

    name: ClassVar[str] = "openai"
    models: tuple[str, ...] = CATALOG.usable("openai")
    default_model: str = "gpt-image-2.5-flare"
    description: ClassVar[str] = "OpenAI Images API: GPT image models (generations, and edits from a previous image)."
    lists_models: ClassVar[bool] = True

    label: ClassVar[str] = LABEL
    settings_prefix: ClassVar[str] = "OPENAI"

    def takes_input_image(self, model: str) -> bool:
        return True  # every GPT image model edits

    def capabilities(self, model: str) -> ModelCapabilities:
        return self.describe(model, max_images=MAX_OUTPUTS, seed=False, negative_prompt=False, sizes=SIZES)

    def plan(self, model: str, spec: PromptSpec) -> OpenAIPlan:
        """Validate the spec for `model` and decide every parameter of the call."""
        check_prompt(spec, model, PROMPT_LIMIT)
        check_count(spec, model, MAX_OUTPUTS)
        return OpenAIPlan(
            model=model,
            size=nearest_size(spec, SIZES),
            n=spec.n,
            quality=map_choice(spec.quality, QUALITY, model, "quality"),
            ignored=tuple(unused_fields(spec, {"quality"})),
        )

    def check_model_request(self, model: str, spec: PromptSpec) -> dict[str, Any]:
        return self.plan(model, spec).effective()

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
            classify=partial(classify_openai_error, model=plan.model),
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
            cost_usd=usage_cost(plan.model, as_object(payload.get("usage"))),
        )

    async def list_models(self) -> list[str]:
        """`GET /models`: every model the key may call (one cheap authenticated call)."""
        request = self.request("GET", "/models")
        payload, _ = await fetch_json(self.http, LABEL, request, classify=classify_openai_error, limit=MODEL_LIST_LIMIT)
        return [str(item["id"]) for item in payload.get("data") or [] if isinstance(item, dict) and "id" in item]

    async def _edit_request(self, plan: OpenAIPlan, prompt: str, image_url: str) -> httpx.Request:
        """`POST /images/edits`: the plan's fields as form fields, the previous image's bytes as the `image` part
        (fetched here, inside the activity, so they never enter workflow history)."""
        image = await self.fetch_input(image_url, max_bytes=MAX_EDIT_IMAGE_BYTES, accepted_types=EDIT_IMAGE_TYPES)
        fields = {name: str(value) for name, value in plan.body(prompt).items()}
        return self.request("POST", "/images/edits", files=form_parts(fields, image))


def usage_cost(model: str, usage: dict[str, Any]) -> float | None:
    """What OpenAI bills for the call, from its `usage` (text and image input tokens, image output tokens)."""
    price = CATALOG.price_of("openai", model)
    if not usage or price is None:
        return None
    details = as_object(usage.get("input_tokens_details"))
    text_in = int(details.get("text_tokens") or 0)
    image_in = int(details.get("image_tokens") or 0)
    if not details:
        text_in = int(usage.get("input_tokens") or 0)
    return price.of_tokens(text_in=text_in, image_in=image_in, image_out=int(usage.get("output_tokens") or 0))


async def _store_item(item: dict[str, Any], sink: OutputSink) -> None:
    if isinstance(item.get("b64_json"), str):
        await sink.store_bytes(decode_base64(LABEL, item["b64_json"]))
    elif isinstance(item.get("url"), str):
        await sink.store_url(item["url"])
    else:
        raise ProviderRejected("OpenAI answered with an image that has neither b64_json nor url", type=BAD_OUTPUT)
