"""Replicate: predictions created with a webhook, polled at /predictions/{id}, cancelled at .../cancel.

A model is `owner/name` (the model's latest version, `POST /models/{owner}/{name}/predictions`) or
`owner/name:version` (a pinned version, `POST /predictions` with `version`). Replicate signs its webhooks with
Standard Webhooks under REPLICATE_WEBHOOK_SECRET; without that secret no webhook is requested and the workflow
polls instead, since unverifiable callbacks would all be refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, ClassVar

import httpx

from core.config import Settings
from models.errors import (
    AUTH,
    BAD_OUTPUT,
    CONTENT_POLICY,
    INVALID_REQUEST,
    JOB_FAILED,
    InvalidJobRequest,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    WebhookRejected,
)
from models.guards import loads_bounded
from models.payloads import PromptSpec, Provenance, ProviderCall, ProviderEvent, ProviderStatus, SubmitResult
from providers.base import ModelCapabilities
from providers.catalog import CATALOG
from providers.classify import classify_status, error_reason, retry_after
from providers.http_base import Connection, HttpProvider
from providers.input_images import InputImage, form_parts
from providers.request_checks import check_input_image
from providers.sizing import nearest_ratio, requested_pixels
from providers.transfer import fetch_json, parse_json
from providers.webhooks import verify_standard_webhook

__all__ = ["ReplicateProvider", "image_field", "prediction_event"]

logger = logging.getLogger(__name__)

MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(?::[A-Za-z0-9]+)?$")
WEBHOOK_EVENTS = ["start", "output", "logs", "completed"]
STATUS_MAP: dict[str, ProviderStatus] = {
    "starting": "queued",
    "processing": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "canceled": "cancelled",
}
FLUX_RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
# tqdm progress bars in prediction logs ("45%|████▌     | 9/20"); the last one is the current step.
LOG_PROGRESS = re.compile(r"(\d{1,3})%\|")
LOG_SEED = re.compile(r"[Uu]sing seed:?\s*(\d+)")
THROTTLE_HINT = re.compile(r"(?:resets in|available in)\s*~?\s*(\d+(?:\.\d+)?)\s*s", re.IGNORECASE)
UNSAFE_OUTPUT = re.compile(r"nsfw|safety|unsafe|sensitive|content policy|moderat", re.IGNORECASE)
PIXEL_STEP = 8
ANSWER_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class ModelTraits:
    """What a model's input schema takes, as far as the prompt spec maps onto it."""

    max_outputs: int
    negative_prompt: bool
    sizing: str  # "aspect_ratio" (from a fixed list) or "pixels" (width and height)
    output_format: str | None = None
    input_image: bool = False  # takes a previousImage (the field's name is read from the model's schema)


KONTEXT = ModelTraits(1, False, "aspect_ratio", "png", input_image=True)
KNOWN_MODELS: dict[str, ModelTraits] = {
    "black-forest-labs/flux-schnell": ModelTraits(4, False, "aspect_ratio", "png"),
    "black-forest-labs/flux-dev": ModelTraits(4, False, "aspect_ratio", "png"),
    "black-forest-labs/flux-1.1-pro": ModelTraits(1, False, "aspect_ratio", "png"),
    "black-forest-labs/flux-kontext-pro": KONTEXT,
    "black-forest-labs/flux-kontext-max": KONTEXT,
    "stability-ai/sdxl": ModelTraits(4, True, "pixels", input_image=True),
}
# Any other public model: the inputs most image models on Replicate share. Whether it takes an input image is
# only known from its schema, read when a job brings one.
OTHER_MODELS = ModelTraits(4, True, "aspect_ratio", input_image=True)
# Names image inputs go by, most specific first; a schema field is an image input when it takes a URI.
IMAGE_FIELD_NAMES = ("input_image", "image", "input_images", "image_input", "init_image")
# Replicate fetches the URI it is given; our storage is often private, so the bytes travel with the request:
# inline as a data URI when small, else through Replicate's file upload.
DATA_URI_LIMIT = 1024 * 1024
INPUT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_INPUT_IMAGE_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ReplicatePlan:
    """The model's inputs that follow from the spec (the prompt and input image are added at submit)."""

    inputs: dict[str, Any]

    def effective(self) -> dict[str, Any]:
        return dict(self.inputs)


class ReplicateProvider(HttpProvider):
    """Replicate predictions: submit with a webhook, poll, cancel, verify Standard Webhooks."""

    name: ClassVar[str] = "replicate"
    label: ClassVar[str] = "replicate"
    models: tuple[str, ...] = tuple(KNOWN_MODELS)
    default_model: str = "black-forest-labs/flux-schnell"
    description: ClassVar[str] = "Replicate predictions (FLUX, Kontext, SDXL or any owner/name[:version] model)."
    asynchronous: ClassVar[bool] = True
    supports_webhooks: ClassVar[bool] = True
    lists_models: ClassVar[bool] = True
    input_image_models: frozenset[str] = frozenset(
        model for model, traits in KNOWN_MODELS.items() if traits.input_image
    )
    settings_prefix: ClassVar[str] = "REPLICATE"
    key_suffix: ClassVar[str | None] = "API_TOKEN"

    def __init__(
        self, connection: Connection, *, rate_per_minute: float | None = None, webhook_secret: str | None = None
    ) -> None:
        super().__init__(connection, rate_per_minute=rate_per_minute)
        self.webhook_secret = webhook_secret

    @classmethod
    def options_from(cls, settings: Settings) -> dict[str, Any]:
        return {"webhook_secret": cls.own_setting(settings, "WEBHOOK_SECRET")}

    def capabilities(self, model: str) -> ModelCapabilities:
        traits = model_traits(model)
        sizes = FLUX_RATIOS if traits.sizing == "aspect_ratio" else ()
        return self.describe(
            model, max_images=traits.max_outputs, seed=True, negative_prompt=traits.negative_prompt, sizes=sizes
        )

    def accepts_model(self, model: str) -> bool:
        """Any `owner/name` or `owner/name:version` on Replicate, not only the listed ones."""
        return bool(MODEL_ID.match(model))

    def check_request(self, model: str, spec: PromptSpec, *, known: bool = False) -> dict[str, Any]:
        # An unlisted model may take an input image (its schema says so at submit), so only listed ones are refused.
        able = [*sorted(self.input_image_models), "any model whose schema has an image input"]
        check_input_image(spec, model, accepted=model_traits(model).input_image, able=able)
        unlisted = model.partition(":")[0] not in KNOWN_MODELS
        return super().check_request(model, replace(spec, previous_image=None) if unlisted else spec, known=known)

    def plan(self, model: str, spec: PromptSpec) -> ReplicatePlan:
        """The sizing and output inputs sent to the model; refuses what the model cannot take."""
        traits = model_traits(model)
        if spec.n > traits.max_outputs:
            raise InvalidJobRequest(f"{model} makes at most {traits.max_outputs} image(s) per job", field="n")
        if spec.negative_prompt and not traits.negative_prompt:
            raise InvalidJobRequest(f"{model} does not take a negative prompt", field="negativePrompt")
        inputs: dict[str, Any] = {} if traits.max_outputs == 1 else {"num_outputs": spec.n}
        if traits is KONTEXT and spec.previous_image:
            inputs["aspect_ratio"] = "match_input_image"
        elif traits.sizing == "pixels":
            width, height = requested_pixels(spec)
            inputs |= {"width": _round_to_step(width), "height": _round_to_step(height)}
        else:
            inputs["aspect_ratio"] = nearest_ratio(spec, FLUX_RATIOS)
        if traits.output_format:
            inputs["output_format"] = traits.output_format
        return ReplicatePlan(inputs)

    async def submit(self, call: ProviderCall) -> SubmitResult:
        effective = self.check_request(call.model, call.spec)
        inputs = {"prompt": call.spec.prompt, **_optional_inputs(call.spec), **effective}
        if call.spec.previous_image:
            inputs |= await self._image_input(call.model, call.spec.previous_image)
        body: dict[str, Any] = {"input": inputs}
        model, _, version = call.model.partition(":")
        if version:
            path = "/predictions"
            body["version"] = version
        else:
            path = f"/models/{model}/predictions"
        if call.webhook_url and self.webhook_secret:
            body["webhook"] = call.webhook_url
            body["webhook_events_filter"] = WEBHOOK_EVENTS
        elif call.webhook_url:
            logger.warning("REPLICATE_WEBHOOK_SECRET is not set: job %s will be polled, not called back", call.job_id)
        prediction = await self._request("POST", path, json=body)
        return SubmitResult(provider_job_id=_prediction_id(prediction), effective=effective)

    async def _image_input(self, model: str, image_url: str) -> dict[str, Any]:
        """`{field: uri}` for the model's image input, the field named by the model's own schema."""
        field_name, is_list = image_field(await self._input_schema(model))
        if field_name is None:
            raise ProviderRejected(
                f"{model} has no image input in its schema, so it cannot start from a previousImage",
                type=INVALID_REQUEST,
            )
        image = await self.fetch_input(image_url, max_bytes=MAX_INPUT_IMAGE_BYTES, accepted_types=INPUT_IMAGE_TYPES)
        uri = image.data_uri if len(image.data) <= DATA_URI_LIMIT else await self._upload(image)
        return {field_name: [uri] if is_list else uri}

    async def _input_schema(self, model: str) -> Mapping[str, Any]:
        """`components.schemas.Input.properties` of the version the prediction will run."""
        name, _, version = model.partition(":")
        if version:
            version_object: Mapping[str, Any] = await self._request("GET", f"/models/{name}/versions/{version}")
        else:
            version_object = _mapping((await self._request("GET", f"/models/{name}")).get("latest_version"))
        schemas = _mapping(_mapping(version_object.get("openapi_schema")).get("components")).get("schemas")
        return _mapping(_mapping(_mapping(schemas).get("Input")).get("properties"))

    async def _upload(self, image: InputImage) -> str:
        """`POST /files`: the image as a file on Replicate, for an image too large to inline."""
        parts = form_parts({"type": image.content_type}, image, image_field="content")
        request = self.request("POST", "/files", files=parts)
        answer, _ = await fetch_json(self.http, self.name, request, classify=classify_error, limit=ANSWER_LIMIT)
        url = _mapping(answer.get("urls")).get("get")
        if not isinstance(url, str):
            raise ProviderUnavailable("replicate stored the input image without saying where")
        return url

    async def list_models(self) -> list[str]:
        """The listed models Replicate still serves: `GET /models/{owner}/{name}` for each (Replicate's own list
        of every public model is far too long to read); a refused key fails the whole call."""
        served = []
        for model in self.models:
            try:
                await self._request("GET", f"/models/{model}")
            except ProviderRejected as error:
                if error.type == AUTH:
                    raise
                continue
            served.append(model)
        return served

    async def poll(self, provider_job_id: str) -> ProviderEvent:
        return prediction_event(await self._request("GET", f"/predictions/{provider_job_id}"))

    async def cancel(self, provider_job_id: str) -> None:
        await self._request("POST", f"/predictions/{provider_job_id}/cancel")

    def verify_webhook(self, job_id: str, headers: Mapping[str, str], body: bytes) -> None:
        """Standard Webhooks under REPLICATE_WEBHOOK_SECRET; the delivery id is the `webhook-id` header."""
        if not self.webhook_secret:
            raise WebhookRejected("REPLICATE_WEBHOOK_SECRET is not set; Replicate webhooks cannot be verified")
        verify_standard_webhook(self.webhook_secret, headers, body)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str] | None = None) -> ProviderEvent:
        """The prediction in the body as an event; `delivery_id` is `webhook-id` when the headers are given."""
        try:
            prediction = loads_bounded(body)
        except ValueError:
            raise WebhookRejected("replicate webhook body is not JSON") from None
        if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
            raise WebhookRejected("replicate webhook body is not a prediction")
        lowered = {key.lower(): value for key, value in (headers or {}).items()}
        return prediction_event(prediction, delivery_id=lowered.get("webhook-id"))

    async def _request(self, method: str, path: str, *, json: Any = None) -> dict[str, Any]:
        request = self.request(method, path, json=json)
        payload, _ = await fetch_json(self.http, self.name, request, classify=classify_error, limit=ANSWER_LIMIT)
        return payload


def image_field(properties: Mapping[str, Any]) -> tuple[str | None, bool]:
    """The schema's image input, and whether it takes a list: a URI field, preferring the usual names."""
    candidates: dict[str, bool] = {}
    for name, field_schema in properties.items():
        field_schema = _mapping(field_schema)
        if field_schema.get("format") == "uri":
            candidates[name] = False
        elif field_schema.get("type") == "array" and _mapping(field_schema.get("items")).get("format") == "uri":
            candidates[name] = True
    for name in (*IMAGE_FIELD_NAMES, *sorted(name for name in candidates if "image" in name)):
        if name in candidates:
            return name, candidates[name]
    return None, False


def model_traits(model: str) -> ModelTraits:
    return KNOWN_MODELS.get(model.partition(":")[0], OTHER_MODELS)


def classify_error(response: httpx.Response, body: bytes) -> ProviderError:
    """Replicate's RFC 7807 errors; a throttled answer's wait hint is in `detail` ("resets in ~30s")."""
    problem = parse_json(body)
    detail = (problem.get("detail") or problem.get("title")) if isinstance(problem, dict) else None
    reason = error_reason(detail, body)
    hint = retry_after(response.headers) or _throttle_hint(reason)
    return classify_status(
        "replicate", response.status_code, reason, retry_after=hint, key_setting=ReplicateProvider.key_setting
    )


def prediction_event(prediction: Mapping[str, Any], *, delivery_id: str | None = None) -> ProviderEvent:
    """A prediction (from a poll or a webhook) as a provider event."""
    status = STATUS_MAP.get(str(prediction.get("status")), "running")
    logs = _text(prediction.get("logs"))
    progress = 100.0 if status == "succeeded" else _log_progress(logs)
    provenance = _provenance(prediction, logs)
    event = ProviderEvent(
        status=status,
        progress=progress,
        delivery_id=delivery_id or f"{prediction.get('id')}:{status}:{progress}",
        provenance=provenance,
    )
    if status == "succeeded":
        event.output_urls = _output_urls(prediction.get("output"))
        if not event.output_urls:
            event.status, event.error_type = "failed", BAD_OUTPUT
            event.error = "replicate reported success without any image URL"
    elif status == "failed":
        event.error = f"replicate prediction failed: {prediction.get('error') or 'no reason given'}"
        event.error_type = CONTENT_POLICY if UNSAFE_OUTPUT.search(event.error) else JOB_FAILED
    return event


def _optional_inputs(spec: PromptSpec) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if spec.seed is not None:
        inputs["seed"] = spec.seed
    if spec.negative_prompt:
        inputs["negative_prompt"] = spec.negative_prompt
    return inputs


def _round_to_step(pixels: int) -> int:
    return max(PIXEL_STEP, round(pixels / PIXEL_STEP) * PIXEL_STEP)


def _prediction_id(prediction: Mapping[str, Any]) -> str:
    prediction_id = prediction.get("id")
    if not isinstance(prediction_id, str) or not prediction_id:
        raise ProviderUnavailable("replicate created a prediction without an id")
    return prediction_id


def _throttle_hint(detail: str) -> timedelta | None:
    match = THROTTLE_HINT.search(detail)
    return timedelta(seconds=float(match.group(1))) if match else None


def _log_progress(logs: str) -> float | None:
    matches = LOG_PROGRESS.findall(logs)
    return float(min(int(matches[-1]), 100)) if matches else None


def _output_urls(output: Any) -> list[str]:
    """`output` is a URL or a list of them; anything that is not an http(s) URL is left out."""
    items = output if isinstance(output, list) else [output]
    return [item for item in items if isinstance(item, str) and item.startswith(("https://", "http://"))]


def _provenance(prediction: Mapping[str, Any], logs: str) -> Provenance:
    predict_time = _mapping(prediction.get("metrics")).get("predict_time")
    seconds = float(predict_time) if isinstance(predict_time, int | float) else None
    seed_match = LOG_SEED.search(logs)
    seed = int(seed_match.group(1)) if seed_match else _mapping(prediction.get("input")).get("seed")
    return Provenance(
        provider_job_id=prediction.get("id"),
        seed=seed if isinstance(seed, int) else None,
        predict_time=seconds,
        cost_usd=prediction_cost(prediction, seconds),
    )


def prediction_cost(prediction: Mapping[str, Any], seconds: float | None) -> float | None:
    """What Replicate bills for a finished prediction: its per-output price × the outputs, or its per-second
    rate × `metrics.predict_time`, as the catalog knows the model."""
    if prediction.get("status") != "succeeded":
        return None
    price = CATALOG.price_of("replicate", str(prediction.get("model") or ""))
    if price is None:
        return None
    per_output = price.default_image
    if per_output is not None:
        return round(per_output * len(_output_urls(prediction.get("output"))), 6)
    return price.of_seconds(seconds) if seconds is not None else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}
