"""JSON for a jsonb column, refused when it carries image bytes (`data:` URIs, base64 blobs)."""

from __future__ import annotations

import json
from typing import Any

from models.guards import assert_storable_json


def storable_json(value: Any, *, what: str, wrapper_depth: int = 0) -> str:
    """`value` as JSON text for a jsonb column, once the no-image-data guard passed it (`wrapper_depth`: the
    levels this document adds around a client's free JSON, which may itself nest MAX_JSON_DEPTH deep)."""
    assert_storable_json(value, what=what, wrapper_depth=wrapper_depth)
    return json.dumps(value)
