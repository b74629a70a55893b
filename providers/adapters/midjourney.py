"""Midjourney through the task API of midjourney-proxy (there is no official Midjourney API).

`POST {base}/submit/imagine` answers HTTP 200 whatever happened; the outcome is the body's `code`. The task is
then polled at `GET {base}/task/{id}/fetch`, and the proxy POSTs the same Task JSON to `notifyHook` on every
status or progress change. Those callbacks are unsigned: the token in the hook URL (every webhook URL has one,
see providers/webhooks.py) is their whole proof.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import httpx

from models.errors import (
    BAD_OUTPUT,
    CONTENT_POLICY,
    INVALID_REQUEST,
    JOB_FAILED,
    RATE_LIMITED,
    InvalidJobRequest,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    WebhookRejected,
)
from models.guards import loads_bounded
from models.payloads import PromptSpec, Provenance, ProviderCall, ProviderEvent, ProviderStatus, SubmitResult
from providers.base import ModelCapabilities
from providers.classify import classify_status, describe_body, retry_after
from providers.http_base import HttpProvider
from providers.sizing import requested_ratio
from providers.transfer import fetch_json

__all__ = ["MidjourneyProvider", "task_event"]

VERSION_FLAGS = {"midjourney": "", "v6": " --v 6", "v6.1": " --v 6.1", "v7": " --v 7"}
STATUS_MAP: dict[str, ProviderStatus] = {
    "NOT_START": "queued",
    "SUBMITTED": "queued",
    "IN_PROGRESS": "running",
    "SUCCESS": "succeeded",
    "FAILURE": "failed",
    "CANCEL": "cancelled",
}
CODE_OK, CODE_EXISTS, CODE_QUEUED = 1, 21, 22
CODE_QUEUE_FULL, CODE_BANNED, CODE_VALIDATION, CODE_FAILURE = 23, 24, 4, 9
MAX_SEED = 4_294_967_295
MAX_RATIO_TERM = 100
PROGRESS = re.compile(r"(\d{1,3})\s*%")
BANNED_REASON = re.compile(r"banned|nsfw|moderat|blocked|not allowed|violat", re.IGNORECASE)
ANSWER_LIMIT = 1024 * 1024
INPUT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_INPUT_IMAGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class ImaginePlan:
    aspect_ratio: str | None

    def effective(self) -> dict[str, Any]:
        return {"aspect_ratio": self.aspect_ratio} if self.aspect_ratio else {}


class MidjourneyProvider(HttpProvider):
    """Midjourney imagine tasks through a midjourney-proxy compatible server."""

    name: ClassVar[str] = "midjourney"
    models: tuple[str, ...] = tuple(VERSION_FLAGS)
    default_model: str = "midjourney"
    description: ClassVar[str] = "Midjourney imagine tasks via a midjourney-proxy task API (one 2x2 grid image)."
    asynchronous: ClassVar[bool] = True
    supports_webhooks: ClassVar[bool] = True
    input_image_models: frozenset[str] = frozenset(VERSION_FLAGS)

    label: ClassVar[str] = "midjourney"
    key_required: ClassVar[bool] = False  # a self-hosted proxy may take anyone
    settings_prefix: ClassVar[str] = "MIDJOURNEY"

    def capabilities(self, model: str) -> ModelCapabilities:
        return self.describe(model, max_images=1, seed=True, negative_prompt=True)  # any aspect ratio

    def auth_headers(self) -> dict[str, str]:
        return {"mj-api-secret": self.api_key} if self.api_key else {}

    def plan(self, model: str, spec: PromptSpec) -> ImaginePlan:
        """The prompt flags the spec turns into; Midjourney draws one grid per task and takes any aspect ratio."""
        if spec.n != 1:
            raise InvalidJobRequest("midjourney draws one image (a 2x2 grid) per job; ask for n=1", field="n")
        if spec.seed is not None and not 0 <= spec.seed <= MAX_SEED:
            raise InvalidJobRequest(f"midjourney seeds are 0..{MAX_SEED}", field="seed")
        return ImaginePlan(_aspect_ratio(spec))

    async def submit(self, call: ProviderCall) -> SubmitResult:
        """Submit an imagine task; `state` carries the job id, `notifyHook` the tokenised webhook URL."""
        effective = self.check_request(call.model, call.spec)
        body: dict[str, Any] = {
            "prompt": imagine_prompt(call.model, call.spec, effective.get("aspect_ratio")),
            "base64Array": await self._image_prompts(call.spec.previous_image),
            "state": call.job_id,
        }
        if call.webhook_url:
            body["notifyHook"] = call.webhook_url
        answer = await self._request("POST", "/submit/imagine", json=body)
        return SubmitResult(provider_job_id=_task_id(answer), effective=effective)

    async def _image_prompts(self, image_url: str | None) -> list[str]:
        """An image prompt: the previousImage as a data URI in `base64Array`, which the proxy hands to Midjourney."""
        if image_url is None:
            return []
        image = await self.fetch_input(image_url, max_bytes=MAX_INPUT_IMAGE_BYTES, accepted_types=INPUT_IMAGE_TYPES)
        return [image.data_uri]

    async def poll(self, provider_job_id: str) -> ProviderEvent:
        try:
            task = await self._request("GET", f"/task/{provider_job_id}/fetch")
        except ProviderRejected as exc:
            # The proxy answers an id it does not know with HTTP 200 and an empty body, which is not JSON.
            if exc.type != BAD_OUTPUT:
                raise
            task = {}
        if not task.get("id"):
            return ProviderEvent(
                status="failed",
                error=f"midjourney-proxy does not know task {provider_job_id} (was the proxy restarted?)",
                error_type=JOB_FAILED,
            )
        return task_event(task)

    def verify_webhook(self, job_id: str, headers: Mapping[str, str], body: bytes) -> None:
        """Nothing beyond the hook URL's token, which the webhook route checks for every provider: the proxy
        does not sign its callbacks."""
        return None

    def parse_webhook(self, body: bytes, headers: Mapping[str, str] | None = None) -> ProviderEvent:
        """The Task JSON as an event; `delivery_id` is f"{task id}:{status}:{progress}"."""
        try:
            task = loads_bounded(body)
        except ValueError:
            raise WebhookRejected("midjourney webhook body is not JSON") from None
        if not isinstance(task, dict) or not task.get("id"):
            raise WebhookRejected("midjourney webhook body is not a task")
        return task_event(task)

    async def _request(self, method: str, path: str, *, json: Any = None) -> dict[str, Any]:
        request = self.request(method, path, json=json)
        payload, _ = await fetch_json(self.http, self.name, request, classify=classify_error, limit=ANSWER_LIMIT)
        return payload


def imagine_prompt(model: str, spec: PromptSpec, aspect_ratio: str | None) -> str:
    """The prompt with Midjourney's flags appended: --ar, --seed, --no and the model version."""
    prompt = spec.prompt.strip()
    if aspect_ratio:
        prompt += f" --ar {aspect_ratio}"
    if spec.seed is not None:
        prompt += f" --seed {spec.seed}"
    if spec.negative_prompt:
        prompt += f" --no {spec.negative_prompt.strip()}"
    return prompt + VERSION_FLAGS[model]


def classify_error(response: httpx.Response, body: bytes) -> ProviderError:
    """Transport-level errors of the proxy (it reports task outcomes with HTTP 200 and a `code`)."""
    return classify_status(
        "midjourney",
        response.status_code,
        describe_body(body),
        retry_after=retry_after(response.headers),
        key_setting=MidjourneyProvider.key_setting,
    )


def task_event(task: Mapping[str, Any]) -> ProviderEvent:
    """A Task object (from a poll or a notifyHook callback) as a provider event."""
    raw_status = str(task.get("status"))
    status = STATUS_MAP.get(raw_status, "running")
    progress = 100.0 if status == "succeeded" else _progress(task.get("progress"))
    event = ProviderEvent(
        status=status,
        progress=progress,
        delivery_id=f"{task.get('id')}:{raw_status}:{task.get('progress') or ''}",
        provenance=Provenance(
            provider_job_id=str(task["id"]) if task.get("id") else None, predict_time=_run_seconds(task)
        ),
    )
    if status == "succeeded":
        image_url = task.get("imageUrl")
        if isinstance(image_url, str) and image_url.startswith(("https://", "http://")):
            event.output_urls = [image_url]
        else:
            event.status, event.error_type = "failed", BAD_OUTPUT
            event.error = "midjourney reported success without an image URL"
    elif status == "failed":
        reason = str(task.get("failReason") or "no reason given")
        event.error = f"midjourney task failed: {reason}"
        event.error_type = CONTENT_POLICY if BANNED_REASON.search(reason) else JOB_FAILED
    return event


def _task_id(answer: Mapping[str, Any]) -> str:
    """The task id of a submit answer, or the error its `code` stands for."""
    code = answer.get("code")
    description = str(answer.get("description") or "")
    properties = answer.get("properties")
    if code in (CODE_OK, CODE_EXISTS, CODE_QUEUED):
        task_id = answer.get("result")
        if task_id is None or str(task_id) == "":
            raise ProviderUnavailable(f"midjourney accepted the task (code {code}) without a task id")
        return str(task_id)
    raise _submit_error(code, description, properties if isinstance(properties, dict) else {})


def _submit_error(code: Any, description: str, properties: Mapping[str, Any]) -> ProviderError:
    if code == CODE_BANNED:
        banned_word = properties.get("bannedWord")
        named = f" (banned word: {banned_word!r})" if banned_word else ""
        return ProviderRejected(f"midjourney refused the prompt{named}: {description}", type=CONTENT_POLICY)
    if code == CODE_VALIDATION:
        return ProviderRejected(f"midjourney refused the request: {description}", type=INVALID_REQUEST)
    if code == CODE_QUEUE_FULL:
        return ProviderUnavailable(f"midjourney's queue is full: {description}", cause=RATE_LIMITED)
    # CODE_FAILURE and codes this adapter does not know: the proxy's own trouble, worth another attempt.
    return ProviderUnavailable(f"midjourney answered code {code}: {description}")


def _aspect_ratio(spec: PromptSpec) -> str | None:
    """The spec's shape as Midjourney's whole-number `W:H`, or None to keep Midjourney's square default."""
    if not (spec.aspect_ratio or spec.size):
        return None
    ratio = max(Fraction(requested_ratio(spec)).limit_denominator(MAX_RATIO_TERM), Fraction(1, MAX_RATIO_TERM))
    return f"{ratio.numerator}:{ratio.denominator}"


def _progress(value: Any) -> float | None:
    match = PROGRESS.search(str(value or ""))
    return float(min(int(match.group(1)), 100)) if match else None


def _run_seconds(task: Mapping[str, Any]) -> float | None:
    started, finished = task.get("startTime"), task.get("finishTime")
    if isinstance(started, int | float) and isinstance(finished, int | float) and finished >= started:
        return (finished - started) / 1000
    return None
