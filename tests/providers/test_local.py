"""The offline `local` provider."""

from __future__ import annotations

import io

from PIL import Image, ImageStat

from providers.adapters import local
from tests.fixtures.providers import Case


def test_the_local_provider_refines_its_input_visibly() -> None:
    # A refinement keeps its input's look (re-tinted, overlaid), so a chain of refinements is visibly a chain.
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (230, 20, 20)).save(buffer, format="PNG")
    red = buffer.getvalue()
    fresh = Image.open(io.BytesIO(local.render_png("a barn", 7, 64, 64)))
    refined = Image.open(io.BytesIO(local.render_png("a barn", 7, 64, 64, start_from=red)))

    def mean(image: Image.Image, band: int) -> float:
        return float(ImageStat.Stat(image).mean[band])

    assert refined.size == (64, 64)
    assert mean(refined, 0) > mean(refined, 2) + 40  # still mostly red
    assert refined.tobytes() != fresh.tobytes()
    assert local.render_png("a barn", 7, 64, 64, start_from=red) == local.render_png(
        "a barn", 7, 64, 64, start_from=red
    )


# Offline: nothing on the wire to check, only the job through the product.
E2E_CASES = [Case("local", "procedural", {"size": "640x360", "seed": 42}, None, None, None)]
