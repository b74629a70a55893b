"""What providers this deployment offers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from api.deps import StateDep
from models.schemas import CamelModel

router = APIRouter(prefix="/v1/providers", tags=["providers"])


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


class ProviderList(CamelModel):
    items: list[ProviderDescription]


@router.get("", response_model=ProviderList)
async def list_providers(state: StateDep) -> ProviderList:
    """Every provider: enabled or not (and why), its models (and which take an input image), sync or async,
    webhooks, rate limit."""
    items: list[dict[str, Any]] = []
    for provider in state.providers.values():
        info = provider.info()
        items.append(
            {**info.__dict__, "models": list(info.models), "input_image_models": list(info.input_image_models)}
        )
    return ProviderList(items=[ProviderDescription.model_validate(item) for item in items])
