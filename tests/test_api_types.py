"""The canvas' API types are generated from the API's OpenAPI schema; a stale copy fails here, not in a browser."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from api.main import openapi_document
from api.openapi_vocabulary import VOCABULARY
from core.db import PROJECT_ROOT
from models.vocabulary import JOB_OWNED_NODE_FIELDS

WEB = PROJECT_ROOT / "web"
# As `npm run gen:api` runs it: every enum also as an array of its values, and request fields with a default optional.
GENERATOR_OPTIONS = ("--enum-values", "--default-non-nullable", "false")


def test_the_committed_openapi_schema_is_the_apis() -> None:
    assert (WEB / "openapi.json").read_text() == openapi_document(), "stale: run `make api-types`"


def test_the_committed_typescript_types_are_generated_from_that_schema(tmp_path: Path) -> None:
    """The types, and the vocabulary's enums as arrays (`jobStatusValues`, `jobOwnedNodeFieldValues`, ...)."""
    generated = tmp_path / "schema.ts"
    bin_dir = WEB / "node_modules" / ".bin"
    for command in (
        [bin_dir / "openapi-typescript", "openapi.json", *GENERATOR_OPTIONS, "-o", generated],
        [bin_dir / "prettier", "--config", WEB / ".prettierrc.json", "--write", generated],
    ):
        subprocess.run(command, cwd=WEB, check=True, capture_output=True, timeout=120)
    assert (WEB / "src" / "schema.ts").read_text() == generated.read_text(), "stale: run `make api-types`"


def test_the_schema_publishes_the_vocabulary_the_canvas_imports() -> None:
    """Every enum the canvas takes from the schema is there, with the values the Python vocabulary has."""
    schemas = json.loads((WEB / "openapi.json").read_text())["components"]["schemas"]
    published = {name: tuple(schemas[name]["enum"]) for name in VOCABULARY}
    assert published == {name: tuple(str(value) for value in values) for name, (_, values) in VOCABULARY.items()}
    assert set(published["JobOwnedNodeField"]) == set(JOB_OWNED_NODE_FIELDS)
