"""The canvas' API types are generated from the API's OpenAPI schema; a stale copy fails here, not in a browser."""

from __future__ import annotations

import subprocess
from pathlib import Path

from api.main import openapi_document
from api.web_vocabulary import typescript_module
from core.db import PROJECT_ROOT

WEB = PROJECT_ROOT / "web"


def test_the_committed_openapi_schema_is_the_apis() -> None:
    assert (WEB / "openapi.json").read_text() == openapi_document(), "stale: run `make api-types`"


def test_the_committed_typescript_types_are_generated_from_that_schema(tmp_path: Path) -> None:
    generated = tmp_path / "schema.d.ts"
    subprocess.run(
        [WEB / "node_modules" / ".bin" / "openapi-typescript", "openapi.json", "-o", generated],
        cwd=WEB,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (WEB / "src" / "schema.d.ts").read_text() == generated.read_text(), "stale: run `make api-types`"


def test_the_committed_vocabulary_is_the_apis() -> None:
    """The words the canvas shares with the API (statuses, the job-owned node fields) are generated, never copied."""
    assert (WEB / "src" / "vocabulary.ts").read_text() == typescript_module(), "stale: run `make api-types`"
