"""The pixel budget: every image we take in (an input image, a provider's result, an upload) is measured from its
header before anything decodes it, and refused past MAX_IMAGE_PIXELS.

A PNG or WebP header is a few bytes, its decoded pixels four bytes each: a 657 KB all-zero 13000x13000 PNG decodes
to 676 MB. So the budget is checked on the declared width and height alone, without decoding, and what must be
decoded (thumbnails, the local provider's input) is decoded small or in a short-lived child process
(core/thumbnails.py).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image

from core.thumbnails import DECODE_ERRORS, Undecodable

__all__ = ["ImageSize", "TooManyPixels", "measure", "over_budget", "verify_whole"]

ImageSize = tuple[int, int]
# What ends each format's file: a PNG's IEND chunk (with its CRC), a JPEG's EOI marker.
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"


class TooManyPixels(ValueError):
    """An image whose header declares more pixels than the budget; the message names both."""


def measure(source: Path | bytes, pillow_format: str, budget: int) -> ImageSize:
    """The width and height the image's header declares (Pillow reads only the header). Raises TooManyPixels past
    `budget`, Undecodable when the header cannot be read as `pillow_format`."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 MP and refuses from 179 MP on its own; the budget here is the one that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(source if isinstance(source, Path) else io.BytesIO(source), formats=[pillow_format])
            with opened as image:
                size: ImageSize = image.size
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(f"{exc} (MAX_IMAGE_PIXELS is {budget / 1e6:.0f} megapixels); scale it down") from exc
    except DECODE_ERRORS as exc:
        raise Undecodable(str(exc)) from exc
    too_large = over_budget(size, budget)
    if too_large:
        raise TooManyPixels(too_large)
    return size


def over_budget(size: ImageSize, budget: int) -> str | None:
    """Why an image of `size` is refused (a sentence naming both figures), or None within the budget."""
    width, height = size
    if width * height <= budget:
        return None
    return (
        f"it is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the {budget / 1e6:.0f}-megapixel"
        " limit (MAX_IMAGE_PIXELS); scale it down"
    )


def verify_whole(path: Path, pillow_format: str) -> None:
    """Raise Undecodable unless the file is one whole image of its format and nothing else: every PNG chunk's CRC
    holds, and no bytes follow the format's end (a truncated file, or an image with a page appended, fails).
    Pillow's `verify` walks the structure without decoding the pixels."""
    try:
        with Image.open(path, formats=[pillow_format]) as image:
            image.verify()
    except DECODE_ERRORS as exc:
        raise Undecodable(str(exc)) from exc
    with path.open("rb") as file:
        file.seek(0, 2)
        size = file.tell()
        file.seek(max(size - 12, 0))
        tail = file.read()
    if pillow_format == "PNG" and not tail.endswith(_PNG_END):
        raise Undecodable("the PNG does not end with its IEND chunk (truncated, or followed by other data)")
    if pillow_format == "JPEG" and not tail.endswith(_JPEG_END):
        raise Undecodable("the JPEG does not end with its end-of-image marker (truncated, or followed by other data)")
    if pillow_format == "WEBP" and _riff_size(path) != size:
        raise Undecodable("the WebP's RIFF size is not the file's size (truncated, or followed by other data)")


def _riff_size(path: Path) -> int:
    with path.open("rb") as file:
        head = file.read(8)
    return int.from_bytes(head[4:8], "little") + 8 if len(head) == 8 else -1
