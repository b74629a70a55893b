"""The model catalog: life cycle by date, retired models refused before any call, discovery, aliases, cost on
every job, `GET /v1/providers`, `imagejobs providers check`, and the README's table, against fakes that answer
as OpenAI and Google do in December 2026."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from core.config import Settings
from providers import catalog_docs
from providers.catalog import CATALOG, Catalog, Lifecycle, ModelDirectory, ModelSource, Price
from tests.fakes.openai import SERVED_IMAGE_MODELS
from tests.fixtures.providers import FakeProviders
from tests.fixtures.stack import Stack, make_settings, running_stack

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = "gpt-image-2.5-flare-2026-09-08"  # listed by OpenAI's GET /v1/models, named by no catalog entry


def test_every_entry_cites_a_source_and_the_day_it_was_checked() -> None:
    for provider in CATALOG.providers():
        for entry in CATALOG.models_of(provider):
            assert entry.source_url.strip() and entry.checked <= date(2026, 12, 6), entry
            if entry.shutdown_on is not None:
                assert entry.replacement, f"{entry.model} is shut down without a replacement"


def test_a_model_is_deprecated_until_its_shutdown_date_and_retired_from_it() -> None:
    entry = CATALOG.entry("openai", "gpt-image-1.5")
    assert entry is not None
    assert entry.lifecycle(date(2026, 11, 30)) == Lifecycle.DEPRECATED
    assert entry.lifecycle(date(2026, 12, 1)) == Lifecycle.RETIRED
    assert "gpt-image-1.5" not in CATALOG.usable("openai", date(2026, 12, 6))
    assert "gpt-image-1.5" in CATALOG.usable("openai", date(2026, 11, 30))


def test_defaults_and_the_issue_list_are_catalogued_live() -> None:
    today = date(2026, 12, 6)
    for provider, model in [
        ("openai", "gpt-image-2"),
        ("openai", "gpt-image-2.5-flare"),
        ("openai", "gpt-image-2.5-sunburst"),
        ("google", "gemini-3.1-flash-image"),
        ("google", "gemini-3-pro-image"),
    ]:
        entry = CATALOG.entry(provider, model)
        assert entry is not None and entry.lifecycle(today) == Lifecycle.ACTIVE and entry.price is not None
    for provider, model in [("openai", "dall-e-3"), ("openai", "gpt-image-1"), ("google", "imagen-4.0-generate-001")]:
        entry = CATALOG.entry(provider, model)
        assert entry is not None and entry.lifecycle(today) == Lifecycle.RETIRED


def test_a_price_is_read_at_the_effective_quality_and_size_else_at_the_default() -> None:
    price = Price(image={"low 1024x1024": 0.006, "medium 1024x1024": 0.053, "2K": 0.101}, default="medium 1024x1024")
    assert price.per_image({"quality": "low", "size": "1024x1024"}) == 0.006
    assert price.per_image({"imageSize": "2K"}) == 0.101
    assert price.per_image({"quality": "auto", "size": "1024x1024"}) == 0.053
    assert price.of_tokens(text_in=1_000_000) is None  # no image output rate: not priced by tokens


def test_discovery_accepts_a_listed_family_member_and_reports_what_the_provider_dropped() -> None:
    directory = ModelDirectory(CATALOG)
    directory.learn("openai", ["gpt-image-2", SNAPSHOT, "whisper-1"])

    resolution = directory.resolve("openai", SNAPSHOT)

    assert resolution.entry is not None and resolution.entry.source == ModelSource.DISCOVERED
    assert [entry.model for entry in directory.discovered("openai")] == [SNAPSHOT]
    assert "gpt-image-2.5-flare" in directory.missing("openai")
    assert directory.resolve("openai", "gpt-image-9").entry is None  # in the family, but nobody lists it


def test_the_readme_table_is_the_catalog() -> None:
    readme = (ROOT / "README.md").read_text()
    expected = catalog_docs.with_table(readme, catalog_docs.markdown_table(CATALOG, date.today()))
    assert readme == expected, "run `imagejobs providers table --write README.md`"


def test_an_operator_file_adds_entries(tmp_path: Path) -> None:
    extra = tmp_path / "catalog.toml"
    extra.write_text(
        '[[model]]\nprovider = "openai"\nmodel = "gpt-image-2"\nshutdown_on = "2099-01-01"\n'
        'replacement = "gpt-image-2.5-flare"\nsource = "ops note"\nchecked = "2026-12-06"\n'
    )
    loaded = Catalog.load(extra)
    entry = loaded.entry("openai", "gpt-image-2")
    assert entry is not None and entry.lifecycle(date(2026, 12, 6)) == Lifecycle.DEPRECATED


# --- Through the product --------------------------------------------------------------------------------------


def catalog_settings(provider_settings: Settings, **overrides: Any) -> Settings:
    return make_settings(provider_settings, MODEL_DISCOVERY_INTERVAL_SECONDS=3600, **overrides)


async def refused(stack: Stack, provider: str, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"workflowId": "canvas-catalog", "nodeId": "n1", "provider": provider}
    body |= {"promptSpec": {"basePrompt": "a lighthouse"}} | ({"model": model} if model else {})
    answer = await stack.api.post("/v1/jobs", json=body)
    assert answer.status_code == 422, answer.text
    return dict(answer.json())


async def test_retired_models_are_refused_before_any_call_naming_the_date_and_replacement(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    async with running_stack(catalog_settings(provider_settings), temporal_client, workers=False) as stack:
        fake_providers.recorder.requests.clear()  # the start's model lists
        dall_e = await refused(stack, "openai", "dall-e-3")
        imagen = await refused(stack, "google", "imagen-4.0-generate-001")
        unknown = await refused(stack, "google", "gemini-9-image-nobody-lists")
    assert dall_e["code"] == "model_retired"
    assert "2026-05-12" in dall_e["message"] and "gpt-image-2.5-sunburst" in dall_e["message"]
    assert imagen["code"] == "model_retired" and "gemini-3.1-flash-image" in imagen["message"]
    assert unknown["code"] == "unsupported_model"
    assert fake_providers.recorder.requests == []


async def test_live_and_discovered_models_complete_with_their_cost(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client
) -> None:
    async with running_stack(catalog_settings(provider_settings), temporal_client) as stack:
        flare = await stack.start(provider="openai", model="gpt-image-2.5-flare", promptSpec={"quality": "low"})
        gemini = await stack.start(provider="google")  # Google's default model
        snapshot = await stack.start(provider="openai", model=SNAPSHOT)
        local = await stack.start(provider="local")
        done = {
            name: await stack.wait(job["jobId"])
            for name, job in (("flare", flare), ("gemini", gemini), ("snapshot", snapshot), ("local", local))
        }
        providers = (await stack.api.get("/v1/providers")).json()["items"]
    for name, record in done.items():
        assert record["status"] == "completed", (name, record)
    assert flare["estimatedCostUsd"] == pytest.approx(0.006)  # the catalog's low square image
    assert done["flare"]["costUsd"] == pytest.approx((12 * 5 + 196 * 30) / 1_000_000)  # the fake's usage tokens
    assert gemini["model"] == "gemini-3.1-flash-image" and gemini["estimatedCostUsd"] == pytest.approx(0.067)
    assert done["gemini"]["costUsd"] > 0
    assert done["snapshot"]["estimatedCostUsd"] > 0 and done["snapshot"]["costUsd"] > 0
    assert local["estimatedCostUsd"] == 0 and done["local"]["costUsd"] == 0
    openai_models = {m["model"]: m for m in next(p for p in providers if p["name"] == "openai")["modelCapabilities"]}
    assert openai_models[SNAPSHOT]["source"] == "discovered" and openai_models[SNAPSHOT]["lifecycle"] == "active"
    assert openai_models["gpt-image-2.5-flare"]["source"] == "catalog"
    assert openai_models["gpt-image-2.5-flare"]["priceUsd"] == pytest.approx(0.053)
    assert openai_models["dall-e-3"]["lifecycle"] == "retired"
    assert openai_models["dall-e-3"]["shutdownOn"] == "2026-05-12" and openai_models["dall-e-3"]["maxImages"] == 0
    assert set(SERVED_IMAGE_MODELS) <= set(openai_models)


async def test_an_alias_maps_an_old_id_on_purpose_and_a_deprecated_model_warns(
    provider_settings: Settings, fake_providers: FakeProviders, temporal_client: Client, tmp_path: Path
) -> None:
    extra = tmp_path / "catalog.toml"
    extra.write_text(
        '[[model]]\nprovider = "openai"\nmodel = "gpt-image-2"\nshutdown_on = "2099-01-01"\n'
        'replacement = "gpt-image-2.5-flare"\nsource = "test"\nchecked = "2026-12-06"\n'
    )
    settings = catalog_settings(
        provider_settings,
        MODEL_ALIASES="openai:dall-e-3=openai:gpt-image-2.5-sunburst",
        MODEL_CATALOG_FILE=extra,
    )
    async with running_stack(settings, temporal_client) as stack:
        aliased = await stack.wait((await stack.start(provider="openai", model="dall-e-3"))["jobId"])
        deprecated = await stack.wait((await stack.start(provider="openai", model="gpt-image-2"))["jobId"])
    assert aliased["status"] == "completed" and aliased["model"] == "gpt-image-2.5-sunburst"
    assert aliased["effective"]["aliasedFrom"] == "openai:dall-e-3"
    assert deprecated["status"] == "completed"
    assert deprecated["warnings"] == [
        "openai:gpt-image-2 is deprecated and shuts down on 2099-01-01; move to gpt-image-2.5-flare"
    ]


async def providers_check(fake_url: str, key: str) -> tuple[int, str]:
    """`imagejobs providers check` in its own process (the fake answers from this test's event loop)."""
    environment = {name: value for name, value in os.environ.items() if not name.endswith(("_KEY", "_TOKEN"))}
    environment |= {"OPENAI_API_KEY": key, "OPENAI_BASE_URL": f"{fake_url}/v1", "DATABASE_URL": ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "providers",
        "check",
        cwd=ROOT,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, output.decode()


async def test_providers_check_lists_the_models_beside_the_catalog_and_fails_on_a_refused_key(
    fake_providers: FakeProviders,
) -> None:
    code, output = await providers_check(fake_providers.url, "sk-good")
    assert code == 0, output
    [openai_row] = [line for line in output.splitlines() if line.startswith("openai")]
    assert " ok " in openai_row and SNAPSHOT in openai_row

    code, output = await providers_check(fake_providers.url, "sk-refused")
    assert code == 1, output
    assert "refused" in output and "Incorrect API key" in output
