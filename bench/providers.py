"""Providers that exist only for the benchmarks, injected into the API and the worker beside the real ones.

- `bench-webhook`: asynchronous; accepts a job at once and then waits for the webhooks the harness sends,
  authenticated like midjourney-proxy's by the token in the webhook URL alone.
- `bench-download`: synchronous; its "image" is a file on the harness' file server, which the worker streams
  into storage through the same path as any provider result URL (the model names the file).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, ClassVar

from fastapi import FastAPI

from models.errors import WebhookRejected
from models.payloads import Provenance, ProviderCall, ProviderEvent, SubmitResult
from providers.base import ImageProvider, OutputSink
from providers.webhooks import job_webhook_url

WEBHOOK_PROVIDER = "bench-webhook"
DOWNLOAD_PROVIDER = "bench-download"
DOWNLOAD_MODELS = ("small", "large-grey", "large-rgb")


class BenchWebhookProvider(ImageProvider):
    """Accepts every job at once; the outcome comes only from webhooks (polls always say "running")."""

    name: ClassVar[str] = WEBHOOK_PROVIDER
    models: ClassVar[tuple[str, ...]] = ("bench",)
    default_model: ClassVar[str] = "bench"
    description: ClassVar[str] = "Benchmark stand-in for a webhook-driven provider."
    asynchronous: ClassVar[bool] = True
    supports_webhooks: ClassVar[bool] = True

    def __init__(self, webhook_secret: str) -> None:
        self.webhook_secret = webhook_secret

    async def submit(self, call: ProviderCall) -> SubmitResult:
        return SubmitResult(provider_job_id=f"bench-{call.job_id}")

    async def poll(self, provider_job_id: str) -> ProviderEvent:
        return ProviderEvent(status="running")

    def verify_webhook(self, job_id: str, headers: Mapping[str, str], body: bytes) -> None:
        """Nothing beyond the URL's token, which the webhook route checks."""
        return None

    def parse_webhook(self, body: bytes, headers: Mapping[str, str] | None = None) -> ProviderEvent:
        try:
            message = json.loads(body)
        except ValueError:
            raise WebhookRejected("bench webhook body is not JSON") from None
        return ProviderEvent(
            status=message["status"],
            progress=message.get("progress"),
            output_urls=list(message.get("output", [])),
            delivery_id=message.get("deliveryId"),
        )


def webhook_path(webhook_secret: str, job_id: str) -> str:
    """Where the bench provider "calls back" for a job's first submit, token included (as the worker makes it)."""
    return job_webhook_url(webhook_secret, "", WEBHOOK_PROVIDER, job_id, 1)


def webhook_body(
    status: str, delivery_id: str, *, progress: float | None = None, output: list[str] | None = None
) -> bytes:
    message: dict[str, Any] = {
        "status": status,
        "deliveryId": delivery_id,
        "progress": progress,
        "output": output or [],
    }
    return json.dumps(message).encode()


class BenchDownloadProvider(ImageProvider):
    """A synchronous provider whose result is a URL on the harness' file server, streamed into storage."""

    name: ClassVar[str] = DOWNLOAD_PROVIDER
    models: ClassVar[tuple[str, ...]] = DOWNLOAD_MODELS
    default_model: ClassVar[str] = "small"
    description: ClassVar[str] = "Benchmark stand-in for a provider with a large result."

    def __init__(self, files_url: str) -> None:
        self.files_url = files_url.rstrip("/")

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        await sink.store_url(f"{self.files_url}/{call.model}.png")
        return Provenance()


def bench_providers(webhook_secret: str, files_url: str) -> dict[str, ImageProvider]:
    providers: list[ImageProvider] = [BenchWebhookProvider(webhook_secret), BenchDownloadProvider(files_url)]
    return {provider.name: provider for provider in providers}


def with_providers(app: FastAPI, extra: Mapping[str, ImageProvider]) -> FastAPI:
    """The app with `extra` providers added to its registry once its lifespan has built the registry."""
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[Any]:
        async with inner(running) as state:
            running.state.imagejobs.providers.update(extra)
            yield state

    app.router.lifespan_context = lifespan
    return app
