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
from providers.base import ModelCapabilities, OutputSink
from providers.classify import as_object, classify_status, error_reason, retry_after
from providers.http_base import Connection, HttpProvider
from providers.request_checks import (
    check_count,
    check_prompt,
    check_seeds,
    unused_fields,
)
from providers.sizing import requested_pixels
from providers.transfer import parse_json, stream_image

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
        key_setting=PollinationsProvider.key_setting,
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


class PollinationsProvider(HttpProvider):
    """Pollinations image generation (synchronous, raw bytes, free tier without a token)."""

    name: ClassVar[str] = "pollinations"
    models: tuple[str, ...] = MODELS
    default_model: str = "flux"
    description: ClassVar[str] = "Pollinations.ai: free image generation (FLUX), no key needed."

    label: ClassVar[str] = LABEL
    key_required: ClassVar[bool] = False  # the free tier takes anonymous callers
    settings_prefix: ClassVar[str] = "POLLINATIONS"
    key_suffix: ClassVar[str | None] = "TOKEN"

    def __init__(self, connection: Connection, *, rate_per_minute: float | None = None, enabled: bool = True) -> None:
        super().__init__(connection, rate_per_minute=rate_per_minute)
        self._enabled = enabled

    @classmethod
    def options_from(cls, settings: Settings) -> dict[str, Any]:
        return {"enabled": cls.own_setting(settings, "ENABLED")}

    def disabled_reason(self) -> str | None:
        return super().disabled_reason() if self._enabled else "POLLINATIONS_ENABLED is false"

    def capabilities(self, model: str) -> ModelCapabilities:
        return self.describe(model, max_images=MAX_OUTPUTS, seed=True, negative_prompt=False)

    def plan(self, model: str, spec: PromptSpec) -> PollinationsPlan:
        """Validate the spec for `model` and decide every parameter of the calls."""
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
        base_seed = plan.seed if plan.seed is not None else secrets.randbelow(SEED_RANGE[1] - plan.n + 2)
        path = f"/prompt/{quote(call.spec.prompt, safe='')}"
        started = time.monotonic()
        for index in range(plan.n):
            request = self.request("GET", path, params=plan.query(base_seed + index))
            await stream_image(self.http, LABEL, request, sink, classify=classify_pollinations_error)
            await sink.progress((index + 1) / plan.n)
        return Provenance(
            seed=base_seed,
            predict_time=round(time.monotonic() - started, 3),
            effective=plan.effective() | {"seed": base_seed},
        )
