"""Input images (image-to-image, upscaling): the job carries only a URL, and the adapter fetches the image inside
the provider activity, so no image bytes ever enter Temporal history or the database.

The fetch takes the same guarded path as result downloads: the URL and every redirect are checked against the
worker's own network (core.netguard, DOWNLOAD_ALLOWLIST), the body is refused as soon as it passes the size cap,
its first bytes must announce an image format the provider accepts (core.ingest.sniff_image_kind), and its header
must declare no more than MAX_IMAGE_PIXELS (core.images): nothing here decodes it.
The image is the caller's: what is wrong with it is the caller's to fix (non-retryable InvalidProviderRequest),
while a host that is unreachable or overloaded may recover (ProviderUnavailable).
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import httpx

from core.images import ImageSize, TooManyPixels, measure
from core.ingest import sniff_image_kind
from core.netguard import DownloadRefused, open_download, unreachable
from core.thumbnails import Undecodable
from models.errors import INVALID_REQUEST, ProviderRejected, ProviderUnavailable
from providers.classify import is_retryable_status
from providers.transfer import declares_more_than, read_at_most

__all__ = ["FormParts", "InputImage", "fetch_input_image", "form_parts"]

SNIFF_BYTES = 12


@dataclass(frozen=True)
class InputImage:
    """A downloaded input image, held in memory only for the provider calls that send it."""

    data: bytes = field(repr=False)
    content_type: str
    extension: str
    size: ImageSize = (0, 0)  # width and height, from the header

    @property
    def filename(self) -> str:
        return f"input.{self.extension}"

    @property
    def data_uri(self) -> str:
        """The image inline, for services that take images as URIs in JSON (Replicate, midjourney-proxy)."""
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode()}"


FormParts = dict[str, tuple[str | None, str | bytes] | tuple[str, bytes, str]]


def form_parts(fields: dict[str, str], image: InputImage | None, *, image_field: str = "image") -> FormParts:
    """Multipart parts for httpx's `files=`: (None, value) parts are plain form fields, and passing them as files
    makes httpx send real multipart/form-data even without an image."""
    parts: FormParts = {name: (None, value) for name, value in fields.items()}
    if image is not None:
        parts[image_field] = (image.filename, image.data, image.content_type)
    return parts


def _refused(message: str) -> ProviderRejected:
    return ProviderRejected(message, type=INVALID_REQUEST)


async def fetch_input_image(
    http: httpx.AsyncClient,
    url: str,
    *,
    allowlist: Sequence[str],
    max_bytes: int,
    max_pixels: int,
    accepted_types: Collection[str],
) -> InputImage:
    """The image at `url`, at most `max_bytes` long, at most `max_pixels` by its header (nothing decodes it here),
    and of one of `accepted_types` (e.g. "image/png")."""
    try:
        async with open_download(http, url, allowlist) as response:
            _check_status(url, response)
            if declares_more_than(response, max_bytes):
                raise _refused(f"the input image {url} is larger than the {max_bytes} byte limit")
            data = await read_at_most(response, max_bytes)
    except DownloadRefused as exc:
        raise _refused(f"refused to download the input image {url}: {exc}") from exc
    except (httpx.TransportError, socket.gaierror) as exc:
        raise ProviderUnavailable(f"Could not download the input image {url}: {unreachable(exc)}.") from exc
    if len(data) > max_bytes:
        raise _refused(f"the input image {url} is larger than the {max_bytes} byte limit")
    kind = sniff_image_kind(data[:SNIFF_BYTES])
    if kind is None or kind.content_type not in accepted_types:
        found = kind.content_type if kind else f"content starting with {data[:SNIFF_BYTES]!r}"
        raise _refused(f"the input image {url} must be one of {', '.join(sorted(accepted_types))}, not {found}")
    try:
        size = measure(data, kind.pillow_format, max_pixels)
    except Undecodable as exc:
        raise _refused(f"the input image {url} is not a readable {kind.content_type}: {exc}") from exc
    except TooManyPixels as exc:
        raise _refused(f"the input image {url} cannot be used: {exc}") from exc
    return InputImage(data=data, content_type=kind.content_type, extension=kind.extension, size=size)


def _check_status(url: str, response: httpx.Response) -> None:
    status = response.status_code
    if is_retryable_status(status):  # the rule provider answers follow
        raise ProviderUnavailable(f"downloading the input image {url} failed: HTTP {status}")
    if not response.is_success:
        raise _refused(f"downloading the input image {url} failed: HTTP {status}")
