"""Image data never belongs in the database or in Temporal history.

The same rule is enforced twice: here, before anything is written, with a readable error, and by the
database's CHECK constraint (see `JSON_WITHOUT_IMAGE_DATA`) as the last line of defence.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_JSON_BYTES = 64 * 1024
# Free-form JSON nests at most this deep: deeper values break JSON encoders (recursion) long before they mean data.
MAX_JSON_DEPTH = 32
# A data: URI of any media type, or a long unbroken base64 run (an inline image, in practice).
_DATA_URI = re.compile(r"data:[a-z]+/[a-z0-9.+-]+;base64", re.IGNORECASE)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{1000,}")


# A request or webhook body nests at most this deep as a whole: free JSON's MAX_JSON_DEPTH inside the few levels of
# the body's own shape. Deeper text is refused before it is parsed: json.loads recurses once per level, and a body
# of 100,000 "[" would take it past Python's recursion limit.
MAX_BODY_JSON_DEPTH = 64
# What a stored document adds around the client's free JSON (a run's request keeps `metadata` one level down).
STORED_WRAPPER_DEPTH = 2
_JSON_STRUCTURE = re.compile(rb'\\.|["\[\]{}]')


class JsonTooDeep(ValueError):
    """JSON text nested deeper than it may be parsed."""


def json_nesting_exceeds(text: bytes, limit: int = MAX_BODY_JSON_DEPTH) -> bool:
    """True when the JSON text opens more than `limit` arrays and objects inside each other (brackets inside
    strings do not count). Linear, without parsing; stops at the first level past the limit."""
    if text.count(b"[") + text.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    for token in _JSON_STRUCTURE.finditer(text):
        mark = token.group()
        if len(mark) == 2:  # an escaped character (inside a string)
            continue
        if mark == b'"':
            in_string = not in_string
        elif in_string:
            continue
        elif mark in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def loads_bounded(text: bytes) -> Any:
    """`json.loads`, refusing text nested deeper than MAX_BODY_JSON_DEPTH (JsonTooDeep, a ValueError) first."""
    if json_nesting_exceeds(text):
        raise JsonTooDeep(f"JSON nests deeper than {MAX_BODY_JSON_DEPTH} levels")
    return json.loads(text)


class ImageDataInJson(ValueError):
    """A JSON value that would carry image bytes (`image_data`), or is too large or too deep to be metadata."""

    def __init__(self, message: str, *, image_data: bool = False) -> None:
        super().__init__(message)
        self.image_data = image_data


def assert_no_image_data(value: Any, *, what: str = "value") -> None:
    """Raise ImageDataInJson when `value` holds a data: URI, a base64 blob, or is oversized."""
    text = json.dumps(value, default=str)
    if len(text.encode()) > MAX_JSON_BYTES:
        raise ImageDataInJson(f"{what} is larger than {MAX_JSON_BYTES} bytes of JSON")
    if _DATA_URI.search(text):
        raise ImageDataInJson(f"{what} contains a data: URI; store the image and pass its URL", image_data=True)
    if _BASE64_RUN.search(text):
        raise ImageDataInJson(f"{what} contains a base64 blob; store the image and pass its URL", image_data=True)


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (a scalar is 0), counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth + 1)
        if deepest > MAX_JSON_DEPTH + STORED_WRAPPER_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def assert_storable_json(value: Any, *, what: str = "value", wrapper_depth: int = 0) -> None:
    """`assert_no_image_data`, after refusing values nested deeper than MAX_JSON_DEPTH (plus `wrapper_depth`, the
    levels a stored document adds around the client's JSON, so that the limit means the same everywhere)."""
    limit = MAX_JSON_DEPTH + wrapper_depth
    if json_depth(value) > limit:
        raise ImageDataInJson(f"{what} nests deeper than {limit} levels")
    assert_no_image_data(value, what=what)


def json_check_sql(column: str) -> str:
    """The CHECK constraint expression that mirrors `assert_no_image_data` in PostgreSQL.

    PostgreSQL regex bounds stop at 255, so the 1000-character base64 run is four runs of 250.
    """
    return (
        f"{column} IS NULL OR (octet_length({column}::text) <= {MAX_JSON_BYTES}"
        f" AND {column}::text !~* 'data:[a-z]+/[a-z0-9.+-]+;base64'"
        f" AND {column}::text !~ '([A-Za-z0-9+/]{{250}}){{4}}')"
    )
