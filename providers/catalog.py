"""The model catalog (providers/catalog.toml) read into types: every model, its life cycle and its price.

A model's life cycle follows from its shutdown date, so the catalog cannot go stale by itself: a deprecated model
becomes retired on the day the provider turns it off. `ModelDirectory` puts the catalog together with what the
providers list today (discovery, store/model_lists.py) and the operator's `MODEL_ALIASES`, and answers the one
question job validation asks: may this model be called, and at what price?
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from models.errors import ModelRetired

CATALOG_FILE = Path(__file__).with_name("catalog.toml")
TOKENS_PER_RATE = 1_000_000  # token rates are USD per 1M tokens


class Lifecycle(StrEnum):
    ACTIVE = "active"
    DEPRECATED = "deprecated"  # announced: still served until its shutdown date
    RETIRED = "retired"  # shut down: the provider refuses the id


class ModelSource(StrEnum):
    CATALOG = "catalog"
    DISCOVERED = "discovered"  # listed by the provider, known only by its family


@dataclass(frozen=True)
class Price:
    """A model's price in USD: per image by "quality size" (or size, or "default"), and the rates that price a
    finished job from the provider's own usage figures."""

    image: Mapping[str, float] = field(default_factory=dict)
    default: str = "default"
    text_in: float | None = None  # per 1M tokens
    image_in: float | None = None
    image_out: float | None = None
    second: float | None = None  # per second of prediction time

    def per_image(self, effective: Mapping[str, Any]) -> float | None:
        """One image at the size and quality the job will get (`effective`), else at the default."""
        quality = str(effective.get("quality") or "")
        size = str(effective.get("imageSize") or effective.get("size") or "")
        for key in (f"{quality} {size}", size, quality, self.default):
            if key in self.image:
                return self.image[key]
        return None

    @property
    def default_image(self) -> float | None:
        return self.image.get(self.default)

    def of_tokens(self, *, text_in: int = 0, image_in: int = 0, image_out: int = 0) -> float | None:
        """What the provider bills for these tokens; None when the model has no token rates."""
        if self.image_out is None:
            return None
        billed = text_in * (self.text_in or 0) + image_in * (self.image_in or 0) + image_out * self.image_out
        return round(billed / TOKENS_PER_RATE, 6)

    def of_seconds(self, seconds: float) -> float | None:
        return None if self.second is None else round(seconds * self.second, 6)


@dataclass(frozen=True)
class CatalogModel:
    """One model of one provider, as the catalog (or discovery) knows it."""

    provider: str
    model: str
    source_url: str
    checked: date
    shutdown_on: date | None = None
    replacement: str | None = None
    price: Price | None = None
    source: ModelSource = ModelSource.CATALOG

    def lifecycle(self, today: date) -> Lifecycle:
        if self.shutdown_on is None:
            return Lifecycle.ACTIVE
        return Lifecycle.RETIRED if today >= self.shutdown_on else Lifecycle.DEPRECATED

    def retirement_notice(self) -> str:
        """The shutdown date and replacement, in words a client can act on."""
        when = f"was shut down on {self.shutdown_on}" if self.shutdown_on else "is retired"
        instead = f"; use {self.provider}:{self.replacement} instead" if self.replacement else ""
        return f"{self.provider}:{self.model} {when}{instead}"

    def deprecation_notice(self) -> str:
        instead = f"; move to {self.replacement}" if self.replacement else ""
        return f"{self.provider}:{self.model} is deprecated and shuts down on {self.shutdown_on}{instead}"


@dataclass(frozen=True)
class Family:
    """Model ids a provider may add at any time (`gpt-image-*`): accepted when the provider lists them."""

    provider: str
    pattern: re.Pattern[str]
    priced_like: str


class Catalog:
    """Every catalogued model, by provider, and the families discovery may add to."""

    def __init__(self, models: Iterable[CatalogModel], families: Iterable[Family]) -> None:
        self._models: dict[tuple[str, str], CatalogModel] = {(m.provider, m.model): m for m in models}
        self._families = list(families)

    @classmethod
    def load(cls, *paths: Path) -> Catalog:
        """The shipped catalog, then each extra file (an operator's own entries replace shipped ones)."""
        models: dict[tuple[str, str], CatalogModel] = {}
        families: list[Family] = []
        for path in (CATALOG_FILE, *paths):
            data = tomllib.loads(path.read_text())
            for raw in data.get("model", []):
                entry = _model(raw, path)
                models[(entry.provider, entry.model)] = entry
            families += [_family(raw) for raw in data.get("family", [])]
        return cls(models.values(), families)

    def entry(self, provider: str, model: str) -> CatalogModel | None:
        return self._models.get((provider, model))

    def models_of(self, provider: str) -> list[CatalogModel]:
        return [entry for (name, _), entry in self._models.items() if name == provider]

    def usable(self, provider: str, today: date | None = None) -> tuple[str, ...]:
        """The provider's models that may be called today (active and deprecated), in catalog order."""
        day = today or utc_today()
        return tuple(m.model for m in self.models_of(provider) if m.lifecycle(day) != Lifecycle.RETIRED)

    def providers(self) -> list[str]:
        return list(dict.fromkeys(provider for provider, _ in self._models))

    def family_member(self, provider: str, model: str) -> CatalogModel | None:
        """A discovered entry for `model` when it belongs to a family of `provider`, priced like the family."""
        for family in self._families:
            if family.provider == provider and family.pattern.fullmatch(model):
                like = self.entry(provider, family.priced_like)
                return CatalogModel(
                    provider=provider,
                    model=model,
                    source_url=f"listed by {provider}; priced like {family.priced_like}",
                    checked=utc_today(),
                    price=like.price if like else None,
                    source=ModelSource.DISCOVERED,
                )
        return None

    def price_of(self, provider: str, model: str) -> Price | None:
        """The price of a model the provider served: its own entry's, else its family's (a discovered id)."""
        entry = self.entry(provider, model) or self.family_member(provider, model)
        return entry.price if entry else None


def utc_today() -> date:
    return datetime.now(UTC).date()


def _model(raw: dict[str, Any], path: Path) -> CatalogModel:
    try:
        price = raw.get("price")
        return CatalogModel(
            provider=raw["provider"],
            model=raw["model"],
            source_url=raw["source"],
            checked=date.fromisoformat(str(raw["checked"])),
            shutdown_on=date.fromisoformat(str(raw["shutdown_on"])) if raw.get("shutdown_on") else None,
            replacement=raw.get("replacement"),
            price=Price(**price) if price else None,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: bad catalog entry {raw.get('model')!r}: {error}") from error


def _family(raw: dict[str, Any]) -> Family:
    return Family(provider=raw["provider"], pattern=re.compile(raw["pattern"]), priced_like=raw["priced_like"])


@dataclass(frozen=True)
class Resolution:
    """The model a job will call: its catalog entry (None when only the adapter knows it), any warning, and the
    alias it came from."""

    provider: str
    model: str
    entry: CatalogModel | None
    warnings: tuple[str, ...] = ()
    aliased_from: str | None = None

    def estimate(self, effective: Mapping[str, Any], n: int) -> float | None:
        """The catalog price of `n` images at the effective size and quality; None when the price is unknown."""
        one = self.entry.price.per_image(effective) if self.entry and self.entry.price else None
        return None if one is None else round(one * n, 6)


class ModelDirectory:
    """The catalog, what each provider lists today, and the operator's aliases: which model a job calls."""

    def __init__(self, catalog: Catalog, aliases: Mapping[tuple[str, str], tuple[str, str]] | None = None) -> None:
        self.catalog = catalog
        self.aliases = dict(aliases or {})
        # provider -> the model ids it listed when last asked (absent: never listed, or it has no list)
        self.listed: dict[str, frozenset[str]] = {}

    def learn(self, provider: str, models: Iterable[str]) -> None:
        self.listed[provider] = frozenset(models)

    def discovered(self, provider: str) -> list[CatalogModel]:
        """Models the provider lists that the catalog does not name but a family of it covers."""
        listed = self.listed.get(provider, frozenset())
        found = (self.catalog.family_member(provider, model) for model in sorted(listed))
        return [entry for entry in found if entry and self.catalog.entry(provider, entry.model) is None]

    def missing(self, provider: str, today: date | None = None) -> list[str]:
        """Usable catalog models the provider no longer lists (only known once it has listed its models)."""
        if provider not in self.listed:
            return []
        return [model for model in self.catalog.usable(provider, today) if model not in self.listed[provider]]

    def resolve(self, provider: str, model: str, today: date | None = None) -> Resolution:
        """The model to call for (provider, model): aliases applied, retired models refused (ModelRetired).

        An entry of None means neither the catalog nor discovery knows the model; the adapter decides then
        (Replicate takes any owner/name).
        """
        aliased_from = None
        if (provider, model) in self.aliases:
            aliased_from = f"{provider}:{model}"
            provider, model = self.aliases[(provider, model)]
        day = today or utc_today()
        entry = self.catalog.entry(provider, model) or self._listed_member(provider, model)
        if entry is None:
            return Resolution(provider, model, None, aliased_from=aliased_from)
        lifecycle = entry.lifecycle(day)
        if lifecycle == Lifecycle.RETIRED:
            raise ModelRetired(entry.retirement_notice())
        warnings = (entry.deprecation_notice(),) if lifecycle == Lifecycle.DEPRECATED else ()
        return Resolution(provider, model, entry, warnings, aliased_from)

    def _listed_member(self, provider: str, model: str) -> CatalogModel | None:
        if model not in self.listed.get(provider, frozenset()):
            return None
        return self.catalog.family_member(provider, model)


# The shipped catalog; processes add the operator's MODEL_CATALOG_FILE through `ModelDirectory`.
CATALOG = Catalog.load()
