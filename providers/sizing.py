"""Sizes and aspect ratios: parsing, and picking the nearest value a provider allows."""

from __future__ import annotations

import math
from collections.abc import Sequence

from models.errors import InvalidJobRequest
from models.payloads import PromptSpec

DEFAULT_LONG_SIDE = 1024


def parse_size(size: str) -> tuple[int, int]:
    """'1024x768' -> (1024, 768)."""
    try:
        width, height = (int(part) for part in size.lower().split("x"))
    except ValueError:
        raise InvalidJobRequest(f"size must look like 1024x1024, not {size!r}", field="size") from None
    if width <= 0 or height <= 0:
        raise InvalidJobRequest("size must be positive", field="size")
    return width, height


def parse_ratio(ratio: str) -> float:
    """'16:9' -> 1.777..."""
    try:
        width, height = (float(part) for part in ratio.split(":"))
    except ValueError:
        raise InvalidJobRequest(f"aspectRatio must look like 16:9, not {ratio!r}", field="aspectRatio") from None
    if width <= 0 or height <= 0:
        raise InvalidJobRequest("aspectRatio must be positive", field="aspectRatio")
    return width / height


def requested_ratio(spec: PromptSpec) -> float:
    """The width/height ratio the spec asks for: from aspectRatio, else from size, else square."""
    if spec.aspect_ratio:
        return parse_ratio(spec.aspect_ratio)
    if spec.size:
        width, height = parse_size(spec.size)
        return width / height
    return 1.0


def requested_pixels(spec: PromptSpec, long_side: int = DEFAULT_LONG_SIDE) -> tuple[int, int]:
    """Exact size when given; otherwise the aspect ratio at `long_side` on the longer edge."""
    if spec.size:
        return parse_size(spec.size)
    ratio = requested_ratio(spec)
    if ratio >= 1:
        return long_side, max(1, round(long_side / ratio))
    return max(1, round(long_side * ratio)), long_side


def nearest_ratio(spec: PromptSpec, allowed: Sequence[str]) -> str:
    """The allowed 'w:h' closest to what the spec asks for (compared on a log scale)."""
    wanted = math.log(requested_ratio(spec))
    return min(allowed, key=lambda value: abs(math.log(parse_ratio(value)) - wanted))


def nearest_size(spec: PromptSpec, allowed: Sequence[str]) -> str:
    """The allowed 'WxH' closest in shape, then in area, to what the spec asks for."""
    wanted_ratio = math.log(requested_ratio(spec))
    wanted_w, wanted_h = requested_pixels(spec)

    def distance(value: str) -> tuple[float, float]:
        width, height = parse_size(value)
        return abs(math.log(width / height) - wanted_ratio), abs(width * height - wanted_w * wanted_h)

    return min(allowed, key=distance)
