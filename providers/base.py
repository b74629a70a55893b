"""The provider interface: one shape for synchronous and asynchronous image services.

Synchronous providers implement `generate`: they call the service and hand every image to the sink, which
streams it into object storage (bytes never leave the activity). Asynchronous providers implement `submit`,
`poll`, `cancel` and the webhook pair; the workflow waits for their webhook or polls, then stores the URLs.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import AsyncIterable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from models.payloads import PromptSpec, Provenance, ProviderCall, ProviderEvent, StoredImage, SubmitResult
from providers.request_checks import apply_style_modifiers, check_input_image, require_model


class OutputSink(Protocol):
    """Where a provider puts its images, and how it reports progress while it works."""

    async def store_stream(self, chunks: AsyncIterable[bytes]) -> StoredImage: ...

    async def store_bytes(self, data: bytes) -> StoredImage: ...

    async def store_url(self, url: str) -> StoredImage: ...

    async def progress(self, fraction: float, message: str | None = None) -> None: ...

    def remember(self, provider_job_id: str) -> None:
        """Keep the id of a job `generate` submitted and then waits on, so a retried attempt resumes it."""

    def remembered(self) -> str | None:
        """The provider job id an earlier attempt of this step kept with `remember`, if any."""


@dataclass(frozen=True)
class ModelCapabilities:
    """What one model can be asked for, as `GET /v1/providers` lists it (so a client can build its form)."""

    model: str
    input_image: bool
    input_image_required: bool
    max_images: int
    seed: bool
    negative_prompt: bool
    # The sizes ("1024x1024") or aspect ratios ("16:9") the model draws; empty when it draws any size.
    sizes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderInfo:
    """What `GET /v1/providers` says of a provider."""

    name: str
    enabled: bool
    disabled_reason: str | None
    models: tuple[str, ...]
    default_model: str
    mode: str
    webhooks: bool
    rate_limit_per_minute: float | None
    description: str
    input_image_models: tuple[str, ...] = ()
    capabilities: tuple[ModelCapabilities, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class ImageProvider(ABC):
    """Base of every adapter; subclasses override what their service supports."""

    name: ClassVar[str]
    # Class attributes for adapters with a fixed list; an adapter configured by settings (custom) sets them per
    # instance.
    models: tuple[str, ...]
    default_model: str
    description: ClassVar[str] = ""
    asynchronous: ClassVar[bool] = False
    supports_webhooks: ClassVar[bool] = False
    # The provider's own webhook signature is the generic hex HMAC of the body (under its own secret), so a hex
    # signature is the provider's to verify rather than a relay's (see api/routes/webhooks.py).
    signs_with_hex_hmac: ClassVar[bool] = False
    # Models that take `previousImage` (refinement, image-to-image, upscaling), and those that need one.
    input_image_models: frozenset[str] = frozenset()
    input_image_required_models: frozenset[str] = frozenset()
    # Whether `list_models` asks the service which models it serves today (discovery, `providers check`).
    lists_models: ClassVar[bool] = False

    def disabled_reason(self) -> str | None:
        """None when the provider can be used; otherwise why not (e.g. its key is missing)."""
        return None

    # Calls per minute across all workers (the provider queue's limit); adapters set it from settings.
    rate_per_minute: float | None = None

    def rate_limit_per_minute(self) -> float | None:
        return self.rate_per_minute

    def info(self) -> ProviderInfo:
        reason = self.disabled_reason()
        return ProviderInfo(
            name=self.name,
            enabled=reason is None,
            disabled_reason=reason,
            models=self.models,
            default_model=self.default_model,
            mode="async" if self.asynchronous else "sync",
            webhooks=self.supports_webhooks,
            rate_limit_per_minute=self.rate_limit_per_minute(),
            description=self.description,
            input_image_models=tuple(model for model in self.models if self.takes_input_image(model)),
            capabilities=tuple(self.capabilities(model) for model in self.models),
        )

    def capabilities(self, model: str) -> ModelCapabilities:
        """What `model` takes; adapters say it through `describe`."""
        return self.describe(model, max_images=1, seed=False, negative_prompt=False)

    def describe(
        self, model: str, *, max_images: int, seed: bool, negative_prompt: bool, sizes: Sequence[str] = ()
    ) -> ModelCapabilities:
        return ModelCapabilities(
            model=model,
            input_image=self.takes_input_image(model),
            input_image_required=self.needs_input_image(model),
            max_images=max_images,
            seed=seed,
            negative_prompt=negative_prompt,
            sizes=tuple(sizes),
        )

    def takes_input_image(self, model: str) -> bool:
        return model in self.input_image_models

    def needs_input_image(self, model: str) -> bool:
        return model in self.input_image_required_models

    def accepts_model(self, model: str) -> bool:
        """Whether this provider takes `model`: the listed ones, unless the adapter knows better (any
        `owner/name` on Replicate, the models a custom server was configured with)."""
        return model in self.models

    def native_styles(self, model: str) -> Collection[str]:
        """The style words `model` takes as a parameter of its own; style modifiers naming one go there."""
        return ()

    def prepare(self, model: str, spec: PromptSpec) -> tuple[PromptSpec, dict[str, Any]]:
        """The spec as the adapter receives it (style modifiers applied), and how they were applied."""
        return apply_style_modifiers(spec, self.native_styles(model))

    def check_request(self, model: str, spec: PromptSpec, *, known: bool = False) -> dict[str, Any]:
        """Validate before any call; return the effective parameters (e.g. the nearest allowed size).

        `known`: the model catalog or discovery vouches for the model, so the adapter's own list is not asked.
        Raises InvalidJobRequest when the model cannot do what the spec asks.
        """
        require_model(self.name, model, self.models, accepted=known or self.accepts_model(model))
        check_input_image(
            spec,
            model,
            accepted=self.takes_input_image(model),
            required=self.needs_input_image(model),
            able=[name for name in self.models if self.takes_input_image(name)],
        )
        prepared, styling = self.prepare(model, spec)
        return {**self.check_model_request(model, prepared), **styling}

    def check_model_request(self, model: str, spec: PromptSpec) -> dict[str, Any]:
        """The adapter's own checks, after the ones every provider shares; returns the effective parameters."""
        return {}

    async def list_models(self) -> list[str]:
        """The model ids the service serves this key today; adapters with `lists_models` implement it."""
        raise NotImplementedError(f"{self.name} does not list its models")

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        raise NotImplementedError(f"{self.name} is asynchronous; use submit/poll")

    async def submit(self, call: ProviderCall) -> SubmitResult:
        raise NotImplementedError(f"{self.name} is synchronous; use generate")

    async def poll(self, provider_job_id: str) -> ProviderEvent:
        raise NotImplementedError(f"{self.name} cannot be polled")

    async def cancel(self, provider_job_id: str) -> None:
        """Cancel at the provider where it can; a no-op by default."""
        return None

    async def store_output(self, reference: str, sink: OutputSink) -> None:
        """Store one output an event reported; a URL unless the adapter reports outputs some other way."""
        await sink.store_url(reference)

    def verify_webhook(self, job_id: str, headers: Mapping[str, str], body: bytes) -> None:
        """Raise WebhookRejected unless the callback is authentic."""
        from models.errors import WebhookRejected

        raise WebhookRejected(f"{self.name} does not send webhooks")

    def parse_webhook(self, body: bytes, headers: Mapping[str, str] | None = None) -> ProviderEvent:
        """The event a verified callback reports; `headers` carry the delivery id for signed schemes."""
        raise NotImplementedError(f"{self.name} does not send webhooks")
