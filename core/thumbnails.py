"""WebP thumbnails of stored images, drawn where decoding a large image cannot swell the worker.

Pillow decodes a PNG or WebP whole before shrinking it: a 4729x4729 RGB image costs ~90 MB while its thumbnail is
drawn, and a worker runs many activities at once. So `make_thumbnail` reads the header first and decides by the
pixels the decoder will produce (JPEG decodes at 1/2 to 1/8 scale in draft mode, so most photos stay cheap):

    image over THUMBNAIL_MAX_PIXELS                  no thumbnail, a warning: even a child would need too much
    decode up to THUMBNAIL_IN_PROCESS_MAX_PIXELS     drawn in a thread of this process (no process start)
    larger decodes                                   drawn by `python -m core.thumbnails`, a short-lived child
                                                     process; at most THUMBNAIL_MAX_CHILD_PROCESSES at once

The child is a fresh interpreter that imports only Pillow, so it starts in ~0.1 s whatever the worker has imported
(multiprocessing's spawn and forkserver would import the worker's main module again), and its memory goes back to
the system when it exits. A child that dies (killed for memory, crashed) or cannot start costs the image its
thumbnail, not the job: the header was sound, so the image is stored like one too large to thumbnail. A file the
decoder refuses raises `Undecodable`, in either process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

if TYPE_CHECKING:
    from core.config import Settings

__all__ = ["ThumbnailPolicy", "Thumbnailed", "Undecodable", "draw_thumbnail", "make_thumbnail"]

logger = logging.getLogger(__name__)

QUALITY = 80
# thumbnail() first shrinks by whole factors (JPEG draft mode, reduce()) to no less than this many times the target.
REDUCING_GAP = 2.0
EXIT_UNDECODABLE = 65  # EX_DATAERR: the child's verdict that the file is not a decodable image
DECODE_ERRORS = (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError)


class Undecodable(Exception):
    """Pillow cannot decode the file as the format its first bytes announce."""


@dataclass(frozen=True)
class ThumbnailPolicy:
    """How large thumbnails are and where they are drawn (the THUMBNAIL_* settings)."""

    max_side: int
    max_pixels: int
    in_process_max_pixels: int
    max_child_processes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ThumbnailPolicy:
        return cls(
            max_side=settings.THUMBNAIL_PX,
            # An image over the pixel budget is refused by its caller (core/images.py): never decode one.
            max_pixels=min(settings.THUMBNAIL_MAX_PIXELS, settings.MAX_IMAGE_PIXELS),
            in_process_max_pixels=settings.THUMBNAIL_IN_PROCESS_MAX_PIXELS,
            max_child_processes=settings.THUMBNAIL_MAX_CHILD_PROCESSES,
        )


@dataclass(frozen=True)
class Thumbnailed:
    """The image's size from its header, and whether its thumbnail was written."""

    width: int
    height: int
    drawn: bool


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    decoded_pixels: int


async def make_thumbnail(source: Path, pillow_format: str, target: Path, policy: ThumbnailPolicy) -> Thumbnailed:
    """Read the size of the image in `source` and, where the policy allows, write its WebP thumbnail to `target`.

    Pillow is held to `pillow_format`; a file it cannot decode as that format raises Undecodable.
    """
    header = await asyncio.to_thread(_read_header, source, pillow_format, policy.max_side)
    width, height = header.width, header.height
    if width * height > policy.max_pixels:
        logger.warning("no thumbnail for a %dx%d image (over %d pixels)", width, height, policy.max_pixels)
        return Thumbnailed(width=width, height=height, drawn=False)
    shape = f"{width}x{height}"
    if header.decoded_pixels <= policy.in_process_max_pixels:
        _announce(shape, os.getpid())
        await asyncio.to_thread(draw_thumbnail, source, pillow_format, target, policy.max_side)
        return Thumbnailed(width=width, height=height, drawn=True)
    async with _child_slots(policy.max_child_processes):
        drawn = await _draw_in_child(source, pillow_format, target, policy.max_side, shape)
    return Thumbnailed(width=width, height=height, drawn=drawn)


def draw_thumbnail(source: Path, pillow_format: str, target: Path, max_side: int) -> None:
    """Decode `source` and write it to `target` as a WebP at most `max_side` pixels on its long side, upright."""
    try:
        with Image.open(source, formats=[pillow_format]) as image:
            small = _shrink(image, max_side)
    except DECODE_ERRORS as exc:
        raise Undecodable(str(exc)) from exc
    small.save(target, format="WEBP", quality=QUALITY)


def _read_header(source: Path, pillow_format: str, max_side: int) -> _Header:
    """The image's size, and the pixels decoding it for a thumbnail will produce (Pillow reads only the header)."""
    try:
        # Past Pillow's bomb limit (~179 MP) open() refuses the image outright; between 89 and 179 MP it only warns.
        with Image.open(source, formats=[pillow_format]) as image:
            width, height = image.size
            # The request thumbnail() will make; only JPEG takes it, shrinking the size the decoder reports.
            image.draft(None, (int(max_side * REDUCING_GAP), int(max_side * REDUCING_GAP)))
            decoded_width, decoded_height = image.size
    except DECODE_ERRORS as exc:
        raise Undecodable(str(exc)) from exc
    return _Header(width=width, height=height, decoded_pixels=decoded_width * decoded_height)


def _announce(shape: str, pid: int) -> None:
    """Which process draws the thumbnail; the record carries its pid as `thumbnail_pid`."""
    where = "this process" if pid == os.getpid() else f"child process {pid}"
    logger.debug("drawing the thumbnail of a %s image in %s", shape, where, extra={"thumbnail_pid": pid})


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """A copy at most `max_side` pixels on its long side, upright, in a mode WebP can hold."""
    image.thumbnail((max_side, max_side), reducing_gap=REDUCING_GAP)
    small = ImageOps.exif_transpose(image)
    if small.mode not in ("RGB", "RGBA"):
        small = small.convert("RGBA" if small.has_transparency_data else "RGB")
    return small


_slots_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _child_slots(limit: int) -> asyncio.Semaphore:
    """The bound on child processes drawing at once in this process (a semaphore serves one event loop)."""
    by_limit = _slots_by_loop.setdefault(asyncio.get_running_loop(), {})
    if limit not in by_limit:
        by_limit[limit] = asyncio.Semaphore(limit)
    return by_limit[limit]


async def _draw_in_child(source: Path, pillow_format: str, target: Path, max_side: int, shape: str) -> bool:
    """Run draw_thumbnail in a child process; False (and a warning) when the child ends without a verdict."""
    try:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", __name__, str(source), pillow_format, str(target), str(max_side)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:  # out of processes or memory: the same verdict as a child that dies
        logger.warning("no thumbnail for a %s image: its child process did not start (%s)", shape, exc)
        return False
    _announce(shape, process.pid)
    try:
        _, stderr = await process.communicate()
    except BaseException:
        # Cancelled (the activity timed out or was cancelled): the child must not outlive its slot.
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    code = process.returncode
    said = stderr.decode(errors="replace").strip()
    last_line = said.splitlines()[-1] if said else "no output"
    if code == 0:
        return True
    if code == EXIT_UNDECODABLE:
        raise Undecodable(last_line)
    logger.warning("no thumbnail for a %s image: its child process %s (%s)", shape, _how_it_ended(code), last_line)
    return False


def _how_it_ended(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exited with {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def main(argv: list[str]) -> int:
    """The child process: `python -m core.thumbnails SOURCE FORMAT TARGET MAX_SIDE`."""
    source, pillow_format, target, max_side = argv
    try:
        draw_thumbnail(Path(source), pillow_format, Path(target), int(max_side))
    except Undecodable as exc:
        sys.stderr.write(f"{exc}\n")
        return EXIT_UNDECODABLE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
