"""Which providers exist, built from settings. The only place that knows every adapter."""

from __future__ import annotations

import httpx

from core.config import Settings
from providers import google, midjourney, openai, pollinations, replicate, stability
from providers.base import ImageProvider
from providers.local import LocalProvider


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
        ),
        openai.from_settings(settings, http),
        google.from_settings(settings, http),
        stability.from_settings(settings, http),
        midjourney.from_settings(settings, http),
        replicate.from_settings(settings, http),
        pollinations.from_settings(settings, http),
    ]
    return {provider.name: provider for provider in providers}
