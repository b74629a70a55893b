"""Images from providers into object storage: spooled to disk, capped, sniffed, measured, thumbnailed, uploaded.

`ImageIngest` stores what a provider hands its OutputSink (activities/generation.py wraps it). Whatever form
the image comes in (a byte stream, a decoded base64 value, a result URL), it takes the same path:

    chunks -> temporary file (size cap enforced while reading, content type sniffed from the first bytes)
           -> Pillow reads the header (width, height) and draws a WebP thumbnail (core.thumbnails: in a child
              process when decoding the image would swell the worker)
           -> storage.put_file(image), storage.put_file(thumbnail)

The whole image is never held in memory, and keys are deterministic (`{prefix}.png`, or `{prefix}-{i}.png` for
several outputs), so a retried activity overwrites what an earlier attempt stored instead of adding to it.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

from core.config import Settings
from core.images import over_budget
from core.metrics import STORAGE_UPLOAD_BYTES, STORAGE_UPLOADS
from core.netguard import DownloadRefused, open_download, unreachable
from core.storage import ObjectStorage, validate_key
from core.thumbnails import Thumbnailed, ThumbnailPolicy, Undecodable, make_thumbnail
from core.tracing import tracer
from models.errors import BAD_OUTPUT, ProviderRejected, ProviderUnavailable
from models.payloads import StoredImage

__all__ = ["ImageIngest", "ImageKind", "ProgressCallback", "sniff_image_kind"]

ProgressCallback = Callable[[float, str | None], Awaitable[None]]

SNIFF_BYTES = 12
STORE_BYTES_CHUNK = 1024 * 1024
RETRYABLE_DOWNLOAD_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class ImageKind:
    """An image format we accept: how it is labelled in storage, its file extension, and Pillow's name for it."""

    content_type: str
    extension: str
    pillow_format: str


PNG = ImageKind("image/png", "png", "PNG")
JPEG = ImageKind("image/jpeg", "jpg", "JPEG")
WEBP = ImageKind("image/webp", "webp", "WEBP")
GIF = ImageKind("image/gif", "gif", "GIF")


def sniff_image_kind(head: bytes) -> ImageKind | None:
    """The image format the first bytes announce (magic numbers), or None for anything else (HTML, JSON, ...)."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    return None


def _bad_output(message: str) -> ProviderRejected:
    return ProviderRejected(message, type=BAD_OUTPUT)


@dataclass(frozen=True)
class _Spooled:
    path: Path
    kind: ImageKind
    size: int


class ImageIngest:
    """Stores the outputs of one provider step, each under a key derived from `key_prefix`."""

    def __init__(
        self,
        *,
        storage: ObjectStorage,
        http: httpx.AsyncClient,
        settings: Settings,
        key_prefix: str,
        output_count: int,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        if output_count < 1:
            raise ValueError("output_count must be at least 1")
        self._storage = storage
        self._http = http
        self._max_bytes = settings.MAX_IMAGE_BYTES
        self._thumbnails = ThumbnailPolicy.from_settings(settings)
        self._max_pixels = settings.MAX_IMAGE_PIXELS
        self._allowlist = list(settings.DOWNLOAD_ALLOWLIST)
        self._key_prefix = validate_key(key_prefix)
        self._output_count = output_count
        self._on_progress = on_progress
        self._next_index = 0
        self.stored: list[StoredImage] = []
        # Time spent storing results already received (thumbnail and uploads), for the `storing` phase.
        self.storing_seconds = 0.0

    async def store_stream(self, chunks: AsyncIterable[bytes]) -> StoredImage:
        key_stem = self._reserve_key_stem()
        async with self._spool(chunks) as spooled:
            image = await self._store_spooled(key_stem, spooled)
        self.stored.append(image)
        return image

    async def store_bytes(self, data: bytes) -> StoredImage:
        if len(data) > self._max_bytes:
            raise _bad_output(f"image of {len(data)} bytes is larger than the {self._max_bytes} byte limit")
        return await self.store_stream(_slices(data))

    async def store_url(self, url: str) -> StoredImage:
        try:
            async with open_download(self._http, url, self._allowlist) as response:
                self._check_download_response(url, response)
                return await self.store_stream(response.aiter_bytes())
        except DownloadRefused as exc:
            raise _bad_output(f"refused to download {url}: {exc}") from exc
        except (httpx.TransportError, socket.gaierror) as exc:
            raise ProviderUnavailable(f"Could not download the result {url}: {unreachable(exc)}.") from exc

    async def progress(self, fraction: float, message: str | None = None) -> None:
        if self._on_progress is not None:
            await self._on_progress(fraction, message)

    def _reserve_key_stem(self) -> str:
        index = self._next_index
        if index >= self._output_count:
            raise _bad_output(f"the provider returned more than the {self._output_count} image(s) asked for")
        self._next_index += 1
        return self._key_prefix if self._output_count == 1 else f"{self._key_prefix}-{index}"

    def _check_download_response(self, url: str, response: httpx.Response) -> None:
        status = response.status_code
        if status >= 500 or status in RETRYABLE_DOWNLOAD_STATUSES:
            raise ProviderUnavailable(f"downloading {url} failed: HTTP {status}")
        if not response.is_success:
            raise _bad_output(f"downloading {url} failed: HTTP {status}")
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
            raise _bad_output(f"{url} is {declared} bytes, more than the {self._max_bytes} byte limit")

    @asynccontextmanager
    async def _spool(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[_Spooled]:
        """The stream in a temporary file (removed on exit), refused as soon as it is too big or not an image."""
        handle = tempfile.NamedTemporaryFile(prefix="imagejobs-", suffix=".spool", delete=False)
        path = Path(handle.name)
        try:
            with handle:
                kind, size = await self._write_capped(chunks, handle)
            yield _Spooled(path=path, kind=kind, size=size)
        finally:
            path.unlink(missing_ok=True)

    async def _write_capped(self, chunks: AsyncIterable[bytes], out: IO[bytes]) -> tuple[ImageKind, int]:
        size = 0
        head = b""
        kind: ImageKind | None = None
        async for chunk in chunks:
            size += len(chunk)
            if size > self._max_bytes:
                raise _bad_output(f"image is larger than the {self._max_bytes} byte limit")
            if kind is None:
                head += chunk[: SNIFF_BYTES - len(head)]
                if len(head) >= SNIFF_BYTES:
                    kind = _require_image(head)
            # One chunk into the page cache is cheaper than a hop to a worker thread.
            out.write(chunk)
        return kind or _require_image(head), size

    async def _put_image(self, key: str, spooled: _Spooled) -> None:
        """The result itself into storage, counted by outcome (thumbnails are ours, so not counted)."""
        try:
            await self._storage.put_file(key, spooled.path, spooled.kind.content_type)
        except Exception:  # a cancellation is not the storage's failure
            STORAGE_UPLOADS.labels(result="failed").inc()
            raise
        STORAGE_UPLOADS.labels(result="stored").inc()
        STORAGE_UPLOAD_BYTES.inc(spooled.size)

    async def _store_spooled(self, key_stem: str, spooled: _Spooled) -> StoredImage:
        started = time.monotonic()
        with tracer.start_as_current_span("store image", attributes={"imagejobs.size_bytes": spooled.size}):
            image = await self._thumbnail_and_put(key_stem, spooled)
        self.storing_seconds += time.monotonic() - started
        return image

    async def _thumbnail_and_put(self, key_stem: str, spooled: _Spooled) -> StoredImage:
        key = f"{key_stem}.{spooled.kind.extension}"
        thumbnail_key = f"{key_stem}.thumb.webp"
        thumbnail_path = spooled.path.with_suffix(".thumb.webp")
        try:
            thumbnailed = await self._thumbnail(spooled, thumbnail_path)
            await self._put_image(key, spooled)
            if thumbnailed.drawn:
                await self._put_thumbnail(key, thumbnail_key, thumbnail_path)
        finally:
            thumbnail_path.unlink(missing_ok=True)
        return StoredImage(
            key=key,
            url=await self._storage.url_for(key),
            content_type=spooled.kind.content_type,
            size_bytes=spooled.size,
            width=thumbnailed.width,
            height=thumbnailed.height,
            thumbnail_key=thumbnail_key if thumbnailed.drawn else None,
            thumbnail_url=await self._storage.url_for(thumbnail_key) if thumbnailed.drawn else None,
        )

    async def _thumbnail(self, spooled: _Spooled, target: Path) -> Thumbnailed:
        """The image's size and its thumbnail in `target`; a file Pillow cannot decode, or one over the pixel budget
        (measured from its header: the thumbnail policy never decodes such an image), is refused as bad output."""
        pillow_format = spooled.kind.pillow_format
        try:
            thumbnailed = await make_thumbnail(spooled.path, pillow_format, target, self._thumbnails)
        except Undecodable as exc:
            raise _bad_output(f"the {pillow_format} image cannot be decoded: {exc}") from exc
        too_large = over_budget((thumbnailed.width, thumbnailed.height), self._max_pixels)
        if too_large:
            raise _bad_output(f"the provider's image cannot be stored: {too_large}")
        return thumbnailed

    async def _put_thumbnail(self, key: str, thumbnail_key: str, thumbnail_path: Path) -> None:
        try:
            await self._storage.put_file(thumbnail_key, thumbnail_path, WEBP.content_type)
        except BaseException:
            # An image without the thumbnail its record promises is half a result; take the image back out.
            await asyncio.shield(self._storage.delete(key))
            raise


async def _slices(data: bytes) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), STORE_BYTES_CHUNK):
        yield bytes(view[start : start + STORE_BYTES_CHUNK])


def _require_image(head: bytes) -> ImageKind:
    kind = sniff_image_kind(head)
    if kind is None:
        what = "an empty body" if not head else f"content starting with {head[:SNIFF_BYTES]!r}"
        raise _bad_output(f"expected a PNG, JPEG, WebP or GIF image, got {what}")
    return kind
