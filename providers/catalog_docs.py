"""The README's model table, written from the catalog so the two cannot disagree (tests/test_catalog.py
compares them; `imagejobs providers table --write README.md` rewrites the section)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from providers.catalog import Catalog, CatalogModel, Lifecycle

BEGIN = "<!-- model-catalog:begin (written by `imagejobs providers table --write README.md`) -->"
END = "<!-- model-catalog:end -->"


def markdown_table(catalog: Catalog, today: date) -> str:
    """One row per catalogued model: provider, model, life cycle, price of one default image, date checked."""
    rows = ["| Provider | Model | Life cycle | USD per image | Checked |", "|---|---|---|---|---|"]
    for provider in catalog.providers():
        for entry in catalog.models_of(provider):
            rows.append(
                f"| {provider} | `{entry.model}` | {_lifecycle(entry, today)} | {_price(entry)} | {entry.checked} |"
            )
    return "\n".join(rows)


def _lifecycle(entry: CatalogModel, today: date) -> str:
    lifecycle = entry.lifecycle(today)
    if lifecycle == Lifecycle.ACTIVE:
        return "active"
    instead = f" → `{entry.replacement}`" if entry.replacement else ""
    return f"{lifecycle} {entry.shutdown_on}{instead}"


def _price(entry: CatalogModel) -> str:
    one = entry.price.default_image if entry.price else None
    if one is None:
        return "per second" if entry.price and entry.price.second else "unknown"
    return f"{one:g}"


def with_table(document: str, table: str) -> str:
    """`document` with the text between the markers replaced by `table`."""
    head, begin, rest = document.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"the document has no {BEGIN} ... {END} section")
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def write_table(path: Path, catalog: Catalog, today: date) -> bool:
    """Rewrite the section in `path`; True when it changed."""
    before = path.read_text()
    after = with_table(before, markdown_table(catalog, today))
    if after != before:
        path.write_text(after)
    return after != before
