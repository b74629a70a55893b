"""What providers this deployment offers."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from pydantic import Field

from api.deps import StateDep
from models.schemas import CamelModel
from providers.base import ProviderInfo

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
    negativePrompt, sizes), sync or async, webhooks, rate limit."""
    return ProviderList(items=[describe(provider.info()) for provider in state.providers.values()])


def describe(info: ProviderInfo) -> ProviderDescription:
    fields = {name: value for name, value in asdict(info).items() if name != "capabilities"}
    capabilities = [ModelDescription.model_validate(asdict(model)) for model in info.capabilities]
    return ProviderDescription.model_validate({**fields, "model_capabilities": capabilities})
