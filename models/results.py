"""A run's result fields (the `runs.payload` column), typed, and the one place that names their JSON keys.

store/runs.py writes them, the API's record reads them; nothing else spells the keys. The column stays JSONB
(camelCase keys), so rows written before this module existed read the same.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from models.payloads import GenerationResult, StoredImage

# The key `store/runs.progress_sql` updates in place with jsonb_set.
PROGRESS_KEY = "progress"


@dataclass
class RunResult:
    """What a run has produced so far: images (URLs only), provenance, progress and timings."""

    image_url: str | None = None
    image_urls: list[str] = field(default_factory=list)
    thumbnail_url: str | None = None
    images: list[StoredImage] = field(default_factory=list)
    revised_prompt: str | None = None
    seed: int | None = None
    predict_time: float | None = None
    effective: dict[str, Any] = field(default_factory=dict)
    progress: float | None = None  # percent, 0-100
    timings: dict[str, float] = field(default_factory=dict)
    # Set when the run is recorded (from the catalog): deprecation warnings, and the alias the model came from.
    warnings: list[str] = field(default_factory=list)
    aliased_from: str | None = None

    @classmethod
    def of_generation(cls, result: GenerationResult) -> RunResult:
        images = result.images
        provenance = result.provenance
        return cls(
            image_url=images[0].url if images else None,
            image_urls=[image.url for image in images],
            thumbnail_url=images[0].thumbnail_url if images else None,
            images=list(images),
            revised_prompt=provenance.revised_prompt,
            seed=provenance.seed,
            predict_time=provenance.predict_time,
            effective=provenance.effective,
            progress=100.0,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON merged into the column: only what is set, so a merge never erases an earlier field."""
        value: dict[str, Any] = {
            "imageUrl": self.image_url,
            "imageUrls": self.image_urls or None,
            "thumbnailUrl": self.thumbnail_url,
            "images": [asdict(image) for image in self.images] or None,
            "revisedPrompt": self.revised_prompt,
            "seed": self.seed,
            "predictTime": self.predict_time,
            "effective": self.effective or None,
            PROGRESS_KEY: self.progress,
            "timings": self.timings or None,
            "warnings": self.warnings or None,
            "aliasedFrom": self.aliased_from,
        }
        return {key: item for key, item in value.items() if item is not None}

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> RunResult:
        value = value or {}
        return cls(
            image_url=value.get("imageUrl"),
            image_urls=list(value.get("imageUrls") or []),
            thumbnail_url=value.get("thumbnailUrl"),
            images=[StoredImage(**image) for image in value.get("images") or []],
            revised_prompt=value.get("revisedPrompt"),
            seed=value.get("seed"),
            predict_time=value.get("predictTime"),
            effective=dict(value.get("effective") or {}),
            progress=value.get(PROGRESS_KEY),
            timings=dict(value.get("timings") or {}),
            warnings=list(value.get("warnings") or []),
            aliased_from=value.get("aliasedFrom"),
        )


@dataclass(frozen=True)
class Transitioned:
    """A run that `transition` changed: who ran it, and for an end, what it cost, how long it took and the outbound
    deliveries it enqueued."""

    provider: str
    model: str
    processor: str
    cost_usd: float | None
    seconds_since_created: float
    outbound_delivery_ids: tuple[str, ...] = ()
    # The oldest job of the tenant waiting for a running slot (maxConcurrentJobs), which this end lets run.
    next_in_line: str | None = None
