"""The README's map of the repository stays true: every top-level package and every table is named in it."""

from __future__ import annotations

import re
from pathlib import Path

from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers every table on the metadata)

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def folder_table() -> set[str]:
    """The names in the first column of the README's `| folder | what lives there |` table."""
    section = README[README.index("| folder | what lives there |") :]
    rows = section.split("\n\n", 1)[0].splitlines()[2:]
    return {name.strip("/") for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_every_top_level_package_is_in_the_readme_map() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} | {"worker.py"}
    assert packages - folder_table() == set()


def test_the_readme_map_names_no_package_that_is_gone() -> None:
    assert {name for name in folder_table() if not (ROOT / name).exists()} == set()


def test_every_table_is_in_the_readme() -> None:
    section = README[README.index("Tables: `runs`") :].split("\n\n", 1)[0]
    named = set(re.findall(r"`([a-z_]+)`", section))
    assert set(SQLModel.metadata.tables) - named == set()
