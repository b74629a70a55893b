"""What providers this deployment offers."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date

from fastapi import APIRouter
from pydantic import Field

from api.deps import StateDep
from models.schemas import CamelModel
from providers.base import ImageProvider
from providers.catalog import CatalogModel, Lifecycle, ModelDirectory, ModelSource, utc_today

router = APIRouter(prefix="/v1/providers", tags=["providers"])


class ModelDescription(CamelModel):
    """What one model takes, so a client can build its form."""

    model: str
    input_image: bool = Field(description="Takes promptSpec.previousImage.")
    input_image_required: bool = Field(description="Needs a previousImage (an upscaler, an edit-only model).")
    max_images: int = Field(description="The largest n one job may ask for.")
    seed: bool = Field(description="Honours promptSpec.seed.")
    negative_prompt: bool = Field(description="Honours promptSpec.negativePrompt.")
    sizes: list[str] = Field(
        description="The sizes (1024x1024) or aspect ratios (16:9) it draws, the nearest one chosen; empty: any."
    )
    lifecycle: Lifecycle = Field(description="retired: refused with 422 model_retired, before any call.")
    shutdown_on: date | None = Field(default=None, description="When the provider turns (or turned) it off.")
    replacement: str | None = Field(default=None, description="The provider's recommended successor.")
    price_usd: float | None = Field(
        default=None, description="One image at the model's default size and quality; absent when unknown."
    )
    source: ModelSource | None = Field(
        default=None,
        description="catalog: our dated model catalog; discovered: the provider lists it and the catalog "
        "knows only its family. Absent for models only the provider's settings name (custom).",
    )


class ProviderDescription(CamelModel):
    name: str
    enabled: bool
    disabled_reason: str | None
    models: list[str]
    default_model: str
    mode: str
    webhooks: bool
    rate_limit_per_minute: float | None
    description: str
    input_image_models: list[str] = Field(description="Models that take promptSpec.previousImage.")
    model_capabilities: list[ModelDescription]


class ProviderList(CamelModel):
    items: list[ProviderDescription]


@router.get("", response_model=ProviderList)
async def list_providers(state: StateDep) -> ProviderList:
    """Every provider: enabled or not (and why), its models and what each takes (input image, n, seed,
    negativePrompt, sizes), each model's life cycle and price, sync or async, webhooks, rate limit."""
    return ProviderList(items=[describe(provider, state.models) for provider in state.providers.values()])


def describe(provider: ImageProvider, directory: ModelDirectory) -> ProviderDescription:
    """The adapter's view of its usable models (and the ones discovery found), each beside its catalog entry;
    retired models are listed last, so a client can tell a user why an old id is refused."""
    today = utc_today()
    entries = {entry.model: entry for entry in directory.catalog.models_of(provider.name)}
    entries |= {entry.model: entry for entry in directory.discovered(provider.name)}
    retired = [entry for entry in entries.values() if entry.lifecycle(today) == Lifecycle.RETIRED]
    usable = [model for model in dict.fromkeys([*provider.models, *entries]) if entries.get(model) not in retired]
    info = provider.info()
    fields = {name: value for name, value in asdict(info).items() if name != "capabilities"}
    fields |= {"models": usable, "input_image_models": [m for m in usable if provider.takes_input_image(m)]}
    capabilities = [_usable_model(provider, model, entries.get(model), today) for model in usable]
    capabilities += [_retired_model(entry) for entry in retired]
    return ProviderDescription.model_validate({**fields, "model_capabilities": capabilities})


def _usable_model(provider: ImageProvider, model: str, entry: CatalogModel | None, today: date) -> ModelDescription:
    described = asdict(provider.capabilities(model))
    if entry is None:
        return ModelDescription.model_validate({**described, "lifecycle": Lifecycle.ACTIVE})
    return ModelDescription.model_validate({**described, **_catalog_fields(entry), "lifecycle": entry.lifecycle(today)})


def _retired_model(entry: CatalogModel) -> ModelDescription:
    """A retired model takes nothing: it is listed for its shutdown date and replacement."""
    nothing = {"input_image": False, "input_image_required": False, "max_images": 0, "seed": False}
    return ModelDescription.model_validate(
        {"model": entry.model, **nothing, "negative_prompt": False, "sizes": [], **_catalog_fields(entry)}
        | {"lifecycle": Lifecycle.RETIRED}
    )


def _catalog_fields(entry: CatalogModel) -> dict[str, object]:
    return {
        "shutdown_on": entry.shutdown_on,
        "replacement": entry.replacement,
        "price_usd": entry.price.default_image if entry.price else None,
        "source": entry.source,
    }
