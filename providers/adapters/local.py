"""The `local` provider: offline procedural art, the embedded default. It is not an AI model.

It draws layered gradients and shapes whose colours and layout come from the prompt and seed, so the same
prompt and seed always give the same picture, at exactly the requested size. It needs no key and no network,
which makes it the provider of `imagejobs dev` and of the end-to-end tests.

Given a `previousImage` it refines: the input, re-tinted and overlaid with the prompt's shapes, so a chain of
refinements runs offline and each step visibly comes from the one before. The input is fetched like any input
image (providers.input_images: SSRF-guarded, size-capped, sniffed, measured against MAX_IMAGE_PIXELS), and one
larger than the picture to draw is first shrunk the way thumbnails are drawn (core.thumbnails: in a short-lived
child process when decoding it whole would swell the worker).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import httpx
from PIL import Image, ImageDraw, ImageFilter

from core.ingest import SNIFF_BYTES, sniff_image_kind
from core.thumbnails import ThumbnailPolicy, Undecodable, make_thumbnail
from models.errors import InvalidJobRequest, ProviderRejected, ProviderUnavailable
from models.payloads import PromptSpec, Provenance, ProviderCall
from providers.base import ImageProvider, ModelCapabilities, OutputSink
from providers.input_images import fetch_input_image
from providers.sizing import requested_pixels
from providers.transfer import require_client

MAX_SIDE = 4096
REFINE_TINT = 0.3  # how far a refinement moves its input towards the prompt's colour
MAX_INPUT_IMAGE_BYTES = 20 * 1024 * 1024
INPUT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
MAX_OUTPUTS = 4
PROGRESS_STEPS = 10


def derive_seed(prompt: str) -> int:
    """A stable seed for a prompt that came without one."""
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big")


def render_png(prompt: str, seed: int, width: int, height: int, start_from: bytes | None = None) -> bytes:
    """Procedural PNG art; deterministic in (prompt, seed, width, height, start_from).

    With `start_from` (an image's bytes), that image resized, re-tinted and overlaid instead of a fresh gradient.
    """
    rng = random.Random(f"{seed}:{prompt}")
    top, bottom = _palette(rng), _palette(rng)
    if start_from is None:
        gradient = Image.linear_gradient("L").resize((width, height))
        base = Image.composite(
            Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), gradient
        )
    else:
        with Image.open(io.BytesIO(start_from)) as source:
            base = source.convert("RGB").resize((width, height))
        base = Image.blend(base, Image.new("RGB", base.size, top), REFINE_TINT)
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    scale = max(width, height)
    for _ in range(rng.randint(6, 14)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(0.05, 0.35) * scale
        alpha = rng.randint(60, 170) if start_from is None else rng.randint(30, 90)
        colour = (*_palette(rng), alpha)
        box = (x - radius, y - radius, x + radius, y + radius)
        if rng.random() < 0.5:
            draw.ellipse(box, fill=colour)
        else:
            draw.regular_polygon((x, y, radius), n_sides=rng.randint(3, 7), rotation=rng.uniform(0, 360), fill=colour)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(1, scale // 200)))
    image = Image.alpha_composite(base.convert("RGBA"), layer).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _palette(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255)


class LocalProvider(ImageProvider):
    """Offline procedural images with a configurable delay that stands in for a real provider's work."""

    name: ClassVar[str] = "local"
    models: tuple[str, ...] = ("procedural",)
    default_model: str = "procedural"
    description: ClassVar[str] = (
        "Offline procedural art (gradients and shapes from the prompt and seed); not an AI model."
    )

    input_image_models: frozenset[str] = frozenset({"procedural"})

    def __init__(
        self,
        *,
        delay_ms: int = 0,
        rate_per_minute: float | None = None,
        http: httpx.AsyncClient | None = None,
        download_allowlist: Sequence[str] = (),
        max_image_pixels: int = 8192 * 8192,
        decode: ThumbnailPolicy | None = None,
    ) -> None:
        self.delay_ms = delay_ms
        self.rate_per_minute = rate_per_minute
        self.http = http
        self.download_allowlist = download_allowlist
        self.max_image_pixels = max_image_pixels
        # Where a large input image is decoded: in a child process past `in_process_max_pixels`, as thumbnails are.
        self.decode = decode or ThumbnailPolicy(
            max_side=MAX_SIDE, max_pixels=max_image_pixels, in_process_max_pixels=4_194_304, max_child_processes=2
        )

    def capabilities(self, model: str) -> ModelCapabilities:
        return self.describe(model, max_images=MAX_OUTPUTS, seed=True, negative_prompt=False)

    def check_model_request(self, model: str, spec: PromptSpec) -> dict[str, Any]:
        width, height = requested_pixels(spec)
        if max(width, height) > MAX_SIDE:
            raise InvalidJobRequest(f"local draws at most {MAX_SIDE}px per side", field="size")
        if spec.n > MAX_OUTPUTS:
            raise InvalidJobRequest(f"local draws at most {MAX_OUTPUTS} images per job", field="n")
        return {"size": f"{width}x{height}"}

    async def generate(self, call: ProviderCall, sink: OutputSink) -> Provenance:
        width, height = requested_pixels(call.spec)
        seed = call.spec.seed if call.spec.seed is not None else derive_seed(call.spec.prompt)
        if self.delay_ms:  # progress only while pretending to work; an instant job has none to show
            for step in range(1, PROGRESS_STEPS + 1):
                await asyncio.sleep(self.delay_ms / 1000 / PROGRESS_STEPS)
                await sink.progress(step / PROGRESS_STEPS * 0.9)
        start_from = await self._input_image(call.spec.previous_image, max(width, height))
        for index in range(call.spec.n):
            png = await asyncio.to_thread(render_png, call.spec.prompt, seed + index, width, height, start_from)
            await sink.store_bytes(png)
        return Provenance(seed=seed, effective={"size": f"{width}x{height}"})

    async def _input_image(self, url: str | None, side: int) -> bytes | None:
        """The input image's bytes, shrunk to at most `side` pixels (in a child process when decoding it whole
        would swell the worker) once it is larger than that."""
        if url is None:
            return None
        image = await fetch_input_image(
            require_client(self.http, self.name),
            url,
            allowlist=self.download_allowlist,
            max_bytes=MAX_INPUT_IMAGE_BYTES,
            max_pixels=self.max_image_pixels,
            accepted_types=INPUT_IMAGE_TYPES,
        )
        if max(image.size) <= side:
            return image.data
        with tempfile.TemporaryDirectory(prefix="imagejobs-local-") as folder:
            source, target = Path(folder) / image.filename, Path(folder) / "shrunk.webp"
            source.write_bytes(image.data)
            kind = sniff_image_kind(image.data[:SNIFF_BYTES])
            assert kind is not None  # fetch_input_image sniffed it already
            policy = replace(self.decode, max_side=side, max_pixels=self.max_image_pixels)
            try:
                drawn = await make_thumbnail(source, kind.pillow_format, target, policy)
            except Undecodable as exc:
                raise ProviderRejected(f"the input image {url} cannot be decoded: {exc}") from exc
            if not drawn.drawn:
                raise ProviderUnavailable(f"the input image {url} could not be shrunk (its decoder process failed)")
            return target.read_bytes()
