"""`imagejobs providers check`: each configured provider's key, and its model list beside the catalog.

It needs only the provider settings (no database, no Temporal), makes one cheap authenticated call per provider
(its model list), and is safe to run in CI against real keys: it never generates anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from models.errors import AUTH, ProviderError
from providers.base import ImageProvider
from providers.catalog import Lifecycle, ModelDirectory, utc_today

KEY_OK, KEY_REFUSED, UNREACHABLE, NOT_CHECKED = "ok", "refused", "unreachable", "not checked"


@dataclass
class ProviderCheck:
    """What one provider answered, and how its list compares with the catalog."""

    provider: str
    key: str
    detail: str = ""
    listed: int | None = None
    missing: list[str] = field(default_factory=list)  # catalog models, usable, that it no longer lists
    discovered: list[str] = field(default_factory=list)  # listed, unknown to the catalog, in a known family
    retired: list[str] = field(default_factory=list)  # listed, but retired in the catalog


async def check_providers(providers: Mapping[str, ImageProvider], directory: ModelDirectory) -> list[ProviderCheck]:
    """Every configured (enabled) provider that can be asked; the others are shown as not checked."""
    checks = []
    for provider in providers.values():
        if provider.disabled_reason() is not None:
            continue
        checks.append(await check_one(provider, directory))
    return checks


async def check_one(provider: ImageProvider, directory: ModelDirectory) -> ProviderCheck:
    if not provider.lists_models:
        return ProviderCheck(provider.name, NOT_CHECKED, "it publishes no model list")
    try:
        models = await provider.list_models()
    except ProviderError as error:
        return ProviderCheck(provider.name, KEY_REFUSED if error.type == AUTH else UNREACHABLE, error.message)
    directory.learn(provider.name, models)
    today = utc_today()
    retired = [
        entry.model
        for entry in directory.catalog.models_of(provider.name)
        if entry.lifecycle(today) == Lifecycle.RETIRED and entry.model in models
    ]
    return ProviderCheck(
        provider.name,
        KEY_OK,
        listed=len(models),
        missing=directory.missing(provider.name, today),
        discovered=[entry.model for entry in directory.discovered(provider.name)],
        retired=retired,
    )


def exit_code(checks: list[ProviderCheck]) -> int:
    """1 when a configured key was refused, 2 when a provider could not be reached, else 0."""
    keys = {check.key for check in checks}
    return 1 if KEY_REFUSED in keys else 2 if UNREACHABLE in keys else 0


def render(checks: list[ProviderCheck]) -> str:
    """A plain-text table, one row per provider, then what each list says beside the catalog."""
    if not checks:
        return "No provider is configured (set OPENAI_API_KEY, GOOGLE_API_KEY, REPLICATE_API_TOKEN, ...).\n"
    rows = [("provider", "key", "listed", "missing from the provider", "discovered", "retired but listed")]
    for check in checks:
        listed = "-" if check.listed is None else str(check.listed)
        key = f"{check.key}: {check.detail}" if check.detail else check.key
        rows.append(
            (check.provider, key, listed, _names(check.missing), _names(check.discovered), _names(check.retired))
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def _names(models: list[str]) -> str:
    return ", ".join(models) if models else "-"
