"""Pollinations: `GET {POLLINATIONS_BASE_URL}/prompt/{url-encoded prompt}?model=...` answers with the image bytes.

It works without a token (anonymous callers are throttled with 402 "Queue full" or 429, both worth a retry);
`POLLINATIONS_TOKEN` is sent as a bearer token when set. Pollinations caches by URL, so every output gets its
own seed (`seed + i`, with a random base seed when the job gave none) to get different images.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from core.config import Settings
from models.errors import ProviderError
from models.payloads import PromptSpec, Provenance, ProviderCall
from providers.base import ImageProvider, OutputSink
from providers.http import (
    as_object,
    classify_status,
    error_reason,
    parse_json,
    require_client,
    retry_after,
    stream_image,
)
from providers.request_checks import (
    check_count,
    check_prompt,
    check_seeds,
    require_model,
    unused_fields,
)
from providers.sizing import requested_pixels

LABEL = "Pollinations"
MODELS = ("flux", "turbo")
MAX_PROMPT_CHARS = 4000  # the prompt travels in the URL path
MAX_OUTPUTS = 4
SEED_RANGE = (0, 2**31 - 1)
# Anonymous callers get 402 "Queue full for IP ..." when the free queue is busy: a reason to wait, not to give up.
RETRYABLE_STATUSES = (402,)


def classify_pollinations_error(response: httpx.Response, body: bytes) -> ProviderError:
    """Pollinations answers errors as JSON `{"error": ...}` or plain text."""
    payload = as_object(parse_json(body))
    message = payload.get("error") or payload.get("message")
    return classify_status(
        LABEL,
        response.status_code,
        error_reason(message, body),
        retry_after=retry_after(response.headers),
        retryable=RETRYABLE_STATUSES,
        key_setting="POLLINATIONS_TOKEN",
    )


@dataclass(frozen=True)
class PollinationsPlan:
    """What will be sent for one job, derived once from the spec."""

    model: str
    width: int
    height: int
    n: int
    seed: int | None
    ignored: tuple[str, ...]

    def query(self, seed: int) -> dict[str, str]:
        return {
            "model": self.model,
            "seed": str(seed),
            "width": str(self.width),
            "height": str(self.height),
            "nologo": "true",
            "enhance": "false",
        }

    def effective(self) -> dict[str, Any]:
        effective: dict[str, Any] = {"size": f"{self.width}x{self.height}", "n": self.n}
        if self.ignored:
            effective["ignored"] = list(self.ignored)
        return effective


class PollinationsProvider(ImageProvider):
    """Pollinations image generation (synchronous, raw bytes, free tier without a token)."""

    name: ClassVar[str] = "pollinations"
    models: ClassVar[tuple[str, ...]] = MODELS
    default_model: ClassVar[str] = "flux"
    description: ClassVar[str] = "Pollinations.ai: free image generation (FLUX), no key needed."

    def __init__(
        self,
        *,
        enabled: bool,
        token: str | None,
        base_url: str,
        http: httpx.AsyncClient | None,
        timeout_seconds: float,
        rate_per_minute: float | None = None,
    ) -> None:
        self._enabled = enabled
        self._token = token
        self._base_url = base_url.rstrip("/")
        self._http = http
        self._timeout = timeout_seconds
        self.rate_per_minute = rate_per_minute

    def disabled_reason(self) -> str | None:
        return None if self._enabled else "POLLINATIONS_ENABLED is false"

    def check_model_request(self, model: str, spec: PromptSpec) -> dict[str, Any]:
        return self.plan(model, spec).effective()

    def plan(self, model: str, spec: PromptSpec) -> PollinationsPlan:
        """Validate the spec for `model` and decide every parameter of the calls."""
        require_model(LABEL, model, self.models)
        check_prompt(spec, model, MAX_PROMPT_CHARS)
        check_count(spec, model, MAX_OUTPUTS)
        check_seeds(spec, model, *SEED_RANGE)
        width, height = requested_pixels(spec)
        return PollinationsPlan(
            model=model,
            width=width,
            height=height,
            n=spec.n,
            seed=spec.seed,
            ignored=tuple(unused_fields(spec, {"seed"})),
        )

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        plan = self.plan(call.model, call.spec)
        http = require_client(self._http, LABEL)
        base_seed = plan.seed if plan.seed is not None else secrets.randbelow(SEED_RANGE[1] - plan.n + 2)
        headers = {"authorization": f"Bearer {self._token}"} if self._token else {}
        url = f"{self._base_url}/prompt/{quote(call.spec.prompt, safe='')}"
        started = time.monotonic()
        for index in range(plan.n):
            request = http.build_request(
                "GET", url, params=plan.query(base_seed + index), headers=headers, timeout=self._timeout
            )
            await stream_image(http, LABEL, request, sink, classify=classify_pollinations_error)
            await sink.progress((index + 1) / plan.n)
        return Provenance(
            seed=base_seed,
            predict_time=round(time.monotonic() - started, 3),
            effective=plan.effective() | {"seed": base_seed},
        )


def from_settings(settings: Settings, http: httpx.AsyncClient | None) -> PollinationsProvider:
    return PollinationsProvider(
        enabled=settings.POLLINATIONS_ENABLED,
        token=settings.POLLINATIONS_TOKEN,
        base_url=settings.POLLINATIONS_BASE_URL,
        http=http,
        timeout_seconds=settings.PROVIDER_TIMEOUT_SECONDS,
        rate_per_minute=settings.POLLINATIONS_RATE_PER_MINUTE,
    )
