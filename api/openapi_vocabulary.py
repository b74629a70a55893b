"""The words the canvas shares with the API, published in the OpenAPI schema as named enums.

Some of them no request or answer field names as its type (a node's `data` is free-form JSON, and a board's node
`type` takes any string), so pydantic would leave them out. They are added here; `make api-types` turns every enum
of the schema into a TypeScript union and a `<name>Values` array (openapi-typescript `--enum-values`), which the
canvas imports instead of copying the words.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from models.vocabulary import JOB_OWNED_NODE_FIELDS, EventKind, JobStatus, NodeRunState, NodeStatus, NodeType

# name -> (description, values)
VOCABULARY: dict[str, tuple[str, tuple[str, ...]]] = {
    "JobStatus": ("A job's status as stored and filtered by (records show the spec's four).", tuple(JobStatus)),
    "NodeStatus": ("A node's `data.status`, as the spec's updateReactFlowNode writes it.", tuple(NodeStatus)),
    "NodeRunState": ("A node's state in a canvas run (`data.runState`).", tuple(NodeRunState)),
    "NodeType": ("The reference canvas' node types; a node saved without one generates images.", tuple(NodeType)),
    "EventKind": (
        "What an entry of a job's audit trail records (the stream sends progress, log and error).",
        tuple(EventKind),
    ),
    "JobOwnedNodeField": (
        "The fields of a node's `data` that its job writes: a board save never changes them.",
        JOB_OWNED_NODE_FIELDS,
    ),
}


def add_vocabulary(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the vocabulary's enums to `schema`'s components (an enum pydantic already published is left as it is)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, (description, values) in VOCABULARY.items():
        components.setdefault(
            name,
            {"description": description, "enum": [_plain(value) for value in values], "title": name, "type": "string"},
        )
    return schema


def _plain(value: str) -> str:
    return value.value if isinstance(value, StrEnum) else value
