"""Which providers exist, built from settings. The only place that knows every adapter."""

from __future__ import annotations

import httpx

from core.config import Settings
from core.thumbnails import ThumbnailPolicy
from providers.adapters.custom import CustomProvider
from providers.adapters.google import GoogleProvider
from providers.adapters.local import LocalProvider
from providers.adapters.midjourney import MidjourneyProvider
from providers.adapters.openai import OpenAIProvider
from providers.adapters.pollinations import PollinationsProvider
from providers.adapters.replicate import ReplicateProvider
from providers.adapters.stability import StabilityProvider
from providers.base import ImageProvider
from providers.http_base import HttpProvider

HTTP_ADAPTERS: tuple[type[HttpProvider], ...] = (
    OpenAIProvider,
    GoogleProvider,
    StabilityProvider,
    MidjourneyProvider,
    ReplicateProvider,
    PollinationsProvider,
    CustomProvider,
)


def build_providers(settings: Settings, http: httpx.AsyncClient | None = None) -> dict[str, ImageProvider]:
    """Every provider, enabled or not (a disabled one says why in `disabled_reason`).

    `http` is the shared client adapters call their services with; the API builds the registry without
    one, for validation and listing only.
    """
    providers: list[ImageProvider] = [
        LocalProvider(
            delay_ms=settings.LOCAL_PROVIDER_DELAY_MS,
            rate_per_minute=settings.LOCAL_RATE_PER_MINUTE,
            http=http,
            download_allowlist=settings.DOWNLOAD_ALLOWLIST,
            max_image_pixels=settings.MAX_IMAGE_PIXELS,
            decode=ThumbnailPolicy.from_settings(settings),
        ),
        *(adapter.from_settings(settings, http) for adapter in HTTP_ADAPTERS),
    ]
    return {provider.name: provider for provider in providers}
