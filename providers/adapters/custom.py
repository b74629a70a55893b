"""`custom`: a team's own model server (a ComfyUI wrapper, a local diffusion server), plugged in with settings alone.

The server speaks the job protocol of docs/custom-provider.md, in the spec's own shapes:

    POST {CUSTOM_PROVIDER_URL}/jobs               submit   -> ImageJobStatus (200, 201 or 202)
    GET  {CUSTOM_PROVIDER_URL}/jobs/{job_id}      status   -> ImageJobStatus (the polling fallback)
    POST {CUSTOM_PROVIDER_URL}/jobs/{job_id}/cancel        (404 is fine: not every server can cancel)
    POST <webhookUrl>                             callback: ImageJobStatus, or {type, data: ImageJobStatus},
                                                  `webhook-signature` = hex HMAC-SHA256 of the raw body

ImageJobStatus is `{job_id, status: pending|running|completed|failed, progress?: 0-100, images?: [{url} |
{b64_json}], error?}`. A `b64_json` image never rides in an event (events enter workflow history): the event
carries a `custom-result:` reference instead, and the store step reads the image again from the status endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from core.config import Settings
from models.errors import BAD_OUTPUT, JOB_FAILED, ProviderError, ProviderRejected, ProviderUnavailable, WebhookRejected
from models.payloads import PromptSpec, Provenance, ProviderCall, ProviderEvent, ProviderStatus, SubmitResult
from models.schemas import ImagePromptSpec
from providers.base import ModelCapabilities, OutputSink
from providers.classify import as_object, classify_status, error_reason, retry_after
from providers.http_base import Connection, HttpProvider
from providers.request_checks import check_prompt
from providers.transfer import decode_base64, fetch_json, json_answer_limit, parse_json
from providers.webhooks import verify_generic_signature

__all__ = ["CustomProvider", "status_event"]

LABEL = "custom"
STATUS_MAP: dict[str, ProviderStatus] = {
    "pending": "queued",
    "running": "running",
    "completed": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}
ENVELOPE_TYPE = "image.generation.status"
INLINE_RESULT = "custom-result:"
MAX_PROMPT_CHARS = 32000
MAX_IMAGES = 10
SUBMIT_ANSWER_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class CustomPlan:
    """The server gets the spec as it is; nothing is decided here but that the prompt is there."""

    def effective(self) -> dict[str, Any]:
        return {}


class CustomProvider(HttpProvider):
    """Any server that speaks the job protocol above; its models are the ones CUSTOM_PROVIDER_MODELS names."""

    name: ClassVar[str] = "custom"
    label: ClassVar[str] = LABEL
    description: ClassVar[str] = "Your own model server, speaking the job protocol of docs/custom-provider.md."
    asynchronous: ClassVar[bool] = True
    supports_webhooks: ClassVar[bool] = True
    signs_with_hex_hmac: ClassVar[bool] = True
    key_required: ClassVar[bool] = False
    settings_prefix: ClassVar[str] = "CUSTOM_PROVIDER"
    base_url_suffix: ClassVar[str] = "URL"

    def __init__(
        self,
        connection: Connection,
        *,
        rate_per_minute: float | None = None,
        models: tuple[str, ...] = ("default",),
        webhook_secret: str | None = None,
    ) -> None:
        super().__init__(connection, rate_per_minute=rate_per_minute)
        self.models = models
        self.default_model = models[0]
        # The server gets the previousImage's URL and fetches it itself; every configured model may take one.
        self.input_image_models = frozenset(models)
        self.webhook_secret = webhook_secret

    @classmethod
    def options_from(cls, settings: Settings) -> dict[str, Any]:
        return {
            "models": tuple(cls.own_setting(settings, "MODELS")) or ("default",),
            "webhook_secret": cls.own_setting(settings, "WEBHOOK_SECRET"),
        }

    def capabilities(self, model: str) -> ModelCapabilities:
        """The server decides what it honours; everything in the spec is passed on."""
        return self.describe(model, max_images=MAX_IMAGES, seed=True, negative_prompt=True)

    def plan(self, model: str, spec: PromptSpec) -> CustomPlan:
        check_prompt(spec, model, MAX_PROMPT_CHARS)
        return CustomPlan()

    async def submit(self, call: ProviderCall) -> SubmitResult:
        """POST /jobs; a webhook is asked for only when CUSTOM_PROVIDER_WEBHOOK_SECRET can verify it."""
        effective = self.check_request(call.model, call.spec)
        body: dict[str, Any] = {
            "jobId": call.job_id,
            "workflowId": call.canvas_id,
            "nodeId": call.node_id,
            "model": call.model,
            "promptSpec": ImagePromptSpec.from_payload(call.spec).model_dump(by_alias=True, exclude_none=True),
        }
        if call.webhook_url and self.webhook_secret:
            body["webhookUrl"] = call.webhook_url
        answer = await self._request("POST", "/jobs", json=body)
        job_id = answer.get("job_id")
        if not isinstance(job_id, str) or not job_id:
            raise ProviderUnavailable(f"the custom server accepted the job without a job_id: {answer!r:.200}")
        return SubmitResult(provider_job_id=job_id, effective=effective)

    async def poll(self, provider_job_id: str) -> ProviderEvent:
        return status_event(await self._status(provider_job_id))

    async def cancel(self, provider_job_id: str) -> None:
        try:
            await self._request("POST", f"/jobs/{provider_job_id}/cancel")
        except ProviderRejected as error:
            if "HTTP 404" not in error.message:
                raise

    def verify_webhook(self, job_id: str, headers: Mapping[str, str], body: bytes) -> None:
        """The spec's generic scheme under CUSTOM_PROVIDER_WEBHOOK_SECRET: hex HMAC-SHA256 of the raw body."""
        if not self.webhook_secret:
            raise WebhookRejected("CUSTOM_PROVIDER_WEBHOOK_SECRET is not set; custom webhooks cannot be verified")
        verify_generic_signature(self.webhook_secret, headers, body)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str] | None = None) -> ProviderEvent:
        payload = parse_json(body)
        if isinstance(payload, dict) and payload.get("type") == ENVELOPE_TYPE:
            payload = payload.get("data")
        if not isinstance(payload, dict) or not isinstance(payload.get("job_id"), str):
            raise WebhookRejected("custom webhook body is not an ImageJobStatus")
        return status_event(payload)

    async def store_output(self, reference: str, sink: OutputSink) -> None:
        """A URL is downloaded; a `custom-result:` reference is a b64_json image, read again from the server."""
        if not reference.startswith(INLINE_RESULT):
            await sink.store_url(reference)
            return
        provider_job_id, _, position = reference.removeprefix(INLINE_RESULT).rpartition("/")
        index = int(position) if position.isdigit() else -1
        images = _images(await self._status(provider_job_id, images=index + 1)) if index >= 0 else []
        encoded = images[index].get("b64_json") if index < len(images) else None
        if not isinstance(encoded, str):
            message = f"the custom server no longer has image {position} of job {provider_job_id}"
            raise ProviderRejected(message, type=BAD_OUTPUT)
        await sink.store_bytes(decode_base64(LABEL, encoded))

    async def _status(self, provider_job_id: str, *, images: int = 1) -> dict[str, Any]:
        limit = json_answer_limit(self.connection.max_image_bytes, images)
        return await self._request("GET", f"/jobs/{provider_job_id}", limit=limit)

    async def _request(
        self, method: str, path: str, *, json: Any = None, limit: int = SUBMIT_ANSWER_LIMIT
    ) -> dict[str, Any]:
        request = self.request(method, path, json=json)
        payload, _ = await fetch_json(self.http, LABEL, request, classify=classify_error, limit=limit)
        return payload


def status_event(status: Mapping[str, Any]) -> ProviderEvent:
    """An ImageJobStatus (from a poll or a webhook) as a provider event; b64_json images become references."""
    job_id = str(status.get("job_id"))
    state = STATUS_MAP.get(str(status.get("status")), "running")
    progress = _progress(status.get("progress"))
    event = ProviderEvent(
        status=state,
        progress=100.0 if state == "succeeded" else progress,
        delivery_id=f"{job_id}:{state}:{progress}",
        provenance=Provenance(provider_job_id=job_id),
    )
    if state == "succeeded":
        event.output_urls = _output_references(job_id, _images(status))
        if not event.output_urls:
            event.status, event.error_type = "failed", BAD_OUTPUT
            event.error = "the custom server reported completed without any image"
    elif state == "failed":
        event.error = f"the custom server failed the job: {error_reason(status.get('error'), b'') or 'no reason given'}"
        event.error_type = JOB_FAILED
    return event


def _images(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    images = status.get("images")
    return [as_object(image) for image in images] if isinstance(images, list) else []


def _output_references(job_id: str, images: list[dict[str, Any]]) -> list[str]:
    references: list[str] = []
    for index, image in enumerate(images):
        url = image.get("url")
        if isinstance(url, str) and url.startswith(("https://", "http://")):
            references.append(url)
        elif isinstance(image.get("b64_json"), str):
            references.append(f"{INLINE_RESULT}{job_id}/{index}")
    return references


def _progress(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(min(max(value, 0), 100))
    return None


def classify_error(response: httpx.Response, body: bytes) -> ProviderError:
    """The server's error body: `{"error": "..."}` or `{"message": "..."}`, else an excerpt."""
    payload = as_object(parse_json(body))
    message = payload.get("error") or payload.get("message") or payload.get("detail")
    reason = error_reason(message if isinstance(message, str) else None, body)
    return classify_status(
        LABEL,
        response.status_code,
        reason,
        retry_after=retry_after(response.headers),
        key_setting=CustomProvider.key_setting,
    )
