"""`HttpProvider`: what every adapter of an HTTP service shares, written once.

An adapter subclasses it and keeps only its wire knowledge: which models it accepts, the plan it derives from a
spec (validated, with the effective parameters), the requests it sends and how it reads the answers. The base owns
the rest:

    settings        every setting of an adapter is `<settings_prefix>_<SUFFIX>`: the key (`_API_KEY` unless the
                    service names it otherwise), `_BASE_URL`, `_RATE_PER_MINUTE`, and its own (`own_setting`)
    disabled_reason the missing key or base URL, named as the README's settings table spells it
    client          the shared httpx client (absent in registries built only to list and validate)
    request(...)    a request to `base_url + path` with the adapter's auth headers and the provider timeout
    input images    `fetch_input`: a previousImage downloaded inside the activity, SSRF-guarded and size-capped
    checks          `check_model_request` = `plan(model, spec).effective()`
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import httpx

from core.config import Settings
from models.payloads import PromptSpec
from providers.base import ImageProvider
from providers.input_images import InputImage, fetch_input_image
from providers.transfer import require_client

__all__ = ["Connection", "HttpProvider", "Plan"]


class Plan(Protocol):
    """What an adapter decided to send for one job; `effective()` is what the job record shows of it."""

    def effective(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Connection:
    """How an adapter reaches its service, as the settings and the worker's shared client give it."""

    api_key: str | None
    base_url: str
    http: httpx.AsyncClient | None
    timeout_seconds: float
    max_image_bytes: int
    max_image_pixels: int
    download_allowlist: tuple[str, ...] = ()


class HttpProvider(ImageProvider):
    """Base of the adapters that call a service over HTTP; see the module docstring for what it owns."""

    label: ClassVar[str]  # how messages name the service ("OpenAI")
    settings_prefix: ClassVar[str]  # "OPENAI": OPENAI_API_KEY, OPENAI_BASE_URL, OPENAI_RATE_PER_MINUTE, ...
    key_suffix: ClassVar[str | None] = "API_KEY"  # None when the service takes no key
    key_required: ClassVar[bool] = True
    base_url_suffix: ClassVar[str] = "BASE_URL"
    # Derived from the prefix and the suffixes when the subclass is made (below); never written by hand.
    key_setting: ClassVar[str | None]
    base_url_setting: ClassVar[str]
    rate_setting: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "settings_prefix" in cls.__dict__:
            cls.key_setting = cls.setting_name(cls.key_suffix) if cls.key_suffix else None
            cls.base_url_setting = cls.setting_name(cls.base_url_suffix)
            cls.rate_setting = cls.setting_name("RATE_PER_MINUTE")

    @classmethod
    def setting_name(cls, suffix: str) -> str:
        return f"{cls.settings_prefix}_{suffix}"

    @classmethod
    def own_setting(cls, settings: Settings, suffix: str) -> Any:
        """One of the adapter's own settings, e.g. `own_setting(settings, "WEBHOOK_SECRET")`."""
        return getattr(settings, cls.setting_name(suffix))

    def __init__(self, connection: Connection, *, rate_per_minute: float | None = None) -> None:
        self.connection = connection
        self.base_url = connection.base_url.rstrip("/")
        self.rate_per_minute = rate_per_minute

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient | None) -> Self:
        """The adapter as the registry builds it: the shared settings, then the adapter's own (`options_from`)."""
        connection = Connection(
            api_key=getattr(settings, cls.key_setting) if cls.key_setting else None,
            base_url=getattr(settings, cls.base_url_setting) or "",
            http=http,
            timeout_seconds=settings.PROVIDER_TIMEOUT_SECONDS,
            max_image_bytes=settings.MAX_IMAGE_BYTES,
            max_image_pixels=settings.MAX_IMAGE_PIXELS,
            download_allowlist=tuple(settings.DOWNLOAD_ALLOWLIST),
        )
        rate = getattr(settings, cls.rate_setting)
        return cls(connection, rate_per_minute=rate, **cls.options_from(settings))

    @classmethod
    def options_from(cls, settings: Settings) -> dict[str, Any]:
        """The adapter's own settings, as keyword arguments of its constructor."""
        return {}

    @property
    def api_key(self) -> str | None:
        return self.connection.api_key

    @property
    def http(self) -> httpx.AsyncClient:
        return require_client(self.connection.http, self.label)

    def disabled_reason(self) -> str | None:
        if self.key_setting and self.key_required and not self.api_key:
            return f"{self.key_setting} is not set"
        if not self.base_url:
            return f"{self.base_url_setting} is not set"
        return None

    def auth_headers(self) -> dict[str, str]:
        """The headers that carry the key; a bearer token unless the service says otherwise."""
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def request(
        self, method: str, path: str, *, headers: Mapping[str, str] | None = None, **content: Any
    ) -> httpx.Request:
        """A request to the service: `content` is httpx's json=, files=, data= or params=."""
        return self.http.build_request(
            method,
            f"{self.base_url}{path}",
            headers={**self.auth_headers(), **(headers or {})},
            timeout=self.connection.timeout_seconds,
            **content,
        )

    async def fetch_input(self, url: str, *, max_bytes: int, accepted_types: Collection[str]) -> InputImage:
        """A previousImage's bytes, for the one call that sends them (never returned to the workflow)."""
        return await fetch_input_image(
            self.http,
            url,
            allowlist=self.connection.download_allowlist,
            max_bytes=min(max_bytes, self.connection.max_image_bytes),
            max_pixels=self.connection.max_image_pixels,
            accepted_types=accepted_types,
        )

    def check_model_request(self, model: str, spec: PromptSpec) -> dict[str, Any]:
        return self.plan(model, spec).effective()

    def plan(self, model: str, spec: PromptSpec) -> Plan:
        """Validate the spec for `model` and decide every parameter of the call."""
        raise NotImplementedError
