"""Stability AI v2beta synchronous generate: `POST /v2beta/stable-image/generate/{ultra|core|sd3}`.

Requests are multipart/form-data; with `Accept: image/*` the answer is the image itself, streamed to the sink,
with `finish-reason` and `seed` headers. A CONTENT_FILTERED finish reason is still HTTP 200 (a blurred image),
so it is checked before a byte is stored. One call makes one image: `n` outputs take `n` calls, seeds `seed + i`.
`classify_stability_error` also serves the asynchronous endpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from core.config import Settings
from models.payloads import PromptSpec, Provenance, ProviderCall
from providers.base import ImageProvider, OutputSink
from providers.errors import CONTENT_POLICY, ProviderError, ProviderRejected
from providers.http import (
    as_object,
    classify_status,
    error_reason,
    parse_json,
    require_client,
    retry_after,
    stream_image,
)
from providers.request_checks import check_count, check_prompt, check_seeds, map_choice, require_model, unused_fields
from providers.sizing import nearest_ratio

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
        key_setting="STABILITY_API_KEY",
    )


def refuse_filtered_output(headers: httpx.Headers) -> None:
    """A CONTENT_FILTERED result is a blurred image with HTTP 200; it must not be stored as a success."""
    finish_reason = headers.get("finish-reason", "SUCCESS")
    if finish_reason == "CONTENT_FILTERED":
        raise ProviderRejected(
            "Stability's content filter blurred the image (finish-reason CONTENT_FILTERED). Rephrase the prompt.",
            type=CONTENT_POLICY,
        )


@dataclass(frozen=True)
class StabilityPlan:
    """What will be sent for one job, derived once from the spec."""

    model: str
    aspect_ratio: str
    n: int
    negative_prompt: str | None
    seed: int | None
    style_preset: str | None
    ignored: tuple[str, ...]

    @property
    def engine(self) -> str:
        return ENGINES[self.model]

    def form(self, prompt: str, index: int) -> dict[str, str]:
        """The form fields of the `index`-th call; seed 0 asks Stability to pick one."""
        fields = {
            "prompt": prompt,
            "aspect_ratio": self.aspect_ratio,
            "output_format": "png",
            "seed": str(self.seed + index if self.seed is not None else 0),
        }
        if self.negative_prompt:
            fields["negative_prompt"] = self.negative_prompt
        if self.style_preset:
            fields["style_preset"] = self.style_preset
        if self.engine == "sd3":
            fields["model"] = self.model
        return fields

    def effective(self) -> dict[str, Any]:
        effective: dict[str, Any] = {"aspectRatio": self.aspect_ratio, "n": self.n}
        if self.style_preset:
            effective["style"] = self.style_preset
        if self.ignored:
            effective["ignored"] = list(self.ignored)
        return effective


class StabilityProvider(ImageProvider):
    """Stability AI Stable Image Ultra, Core and SD 3.5 (synchronous generate endpoints)."""

    name: ClassVar[str] = "stability"
    models: ClassVar[tuple[str, ...]] = tuple(ENGINES)
    default_model: ClassVar[str] = "stable-image-core"
    description: ClassVar[str] = "Stability AI v2beta: Stable Image Ultra, Stable Image Core, SD 3.5."

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str,
        http: httpx.AsyncClient | None,
        timeout_seconds: float,
        rate_per_minute: float | None = None,
    ) -> None:
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self._http = http
        self._timeout = timeout_seconds
        self.rate_per_minute = rate_per_minute

    def disabled_reason(self) -> str | None:
        return None if self._api_key else "STABILITY_API_KEY is not set"

    def check_request(self, model: str, spec: PromptSpec) -> dict[str, Any]:
        return self.plan(model, spec).effective()

    def plan(self, model: str, spec: PromptSpec) -> StabilityPlan:
        """Validate the spec for `model` and decide every parameter of the calls."""
        require_model(LABEL, model, self.models)
        check_prompt(spec, model, MAX_PROMPT_CHARS)
        check_count(spec, model, MAX_OUTPUTS)
        check_seeds(spec, model, *SEED_RANGE)
        styled = ENGINES[model] in STYLED_ENGINES
        negative = model not in NO_NEGATIVE_PROMPT_MODELS
        supported = {"seed"} | ({"style"} if styled else set()) | ({"negativePrompt"} if negative else set())
        return StabilityPlan(
            model=model,
            aspect_ratio=nearest_ratio(spec, ASPECT_RATIOS),
            n=spec.n,
            negative_prompt=spec.negative_prompt if negative else None,
            seed=spec.seed,
            style_preset=map_choice(spec.style, STYLE_PRESETS, model, "style") if styled else None,
            ignored=tuple(unused_fields(spec, supported)),
        )

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        plan = self.plan(call.model, call.spec)
        http = require_client(self._http, LABEL)
        started = time.monotonic()
        seeds: list[int] = []
        for index in range(plan.n):
            request = http.build_request(
                "POST",
                f"{self._base_url}/v2beta/stable-image/generate/{plan.engine}",
                # (None, value) parts are plain form fields; `files=` makes httpx send real multipart/form-data.
                files={name: (None, value) for name, value in plan.form(call.spec.prompt, index).items()},
                headers={"authorization": f"Bearer {self._api_key}", "accept": "image/*"},
                timeout=self._timeout,
            )
            headers = await stream_image(
                http, LABEL, request, sink, classify=classify_stability_error, inspect=refuse_filtered_output
            )
            seed = headers.get("seed", "")
            if seed.isdigit():
                seeds.append(int(seed))
            await sink.progress((index + 1) / plan.n)
        effective = plan.effective() | ({"seeds": seeds} if seeds else {})
        return Provenance(
            seed=seeds[0] if seeds else plan.seed,
            predict_time=round(time.monotonic() - started, 3),
            effective=effective,
        )


def from_settings(settings: Settings, http: httpx.AsyncClient | None) -> StabilityProvider:
    return StabilityProvider(
        api_key=settings.STABILITY_API_KEY,
        base_url=settings.STABILITY_BASE_URL,
        http=http,
        timeout_seconds=settings.PROVIDER_TIMEOUT_SECONDS,
        rate_per_minute=settings.STABILITY_RATE_PER_MINUTE,
    )
