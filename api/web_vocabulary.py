"""The words the canvas shares with the API, written as a TypeScript module (web/src/vocabulary.ts) so that the two
never drift apart: `make api-types` writes it beside the API's types, and a test fails when it is stale."""

from __future__ import annotations

import json
from collections.abc import Iterable

from models.vocabulary import JOB_OWNED_NODE_FIELDS, JobStatus, NodeRunState, NodeStatus

HEADER = "// Generated from models/vocabulary.py by `make api-types`: do not edit; change the Python and regenerate.\n"


def typescript_module() -> str:
    constants = (
        ("JOB_STATUSES", "A job's statuses as stored and filtered by (records show the spec's four).", JobStatus),
        ("NODE_STATUSES", "A node's data.status, as the spec's updateReactFlowNode writes it.", NodeStatus),
        ("NODE_RUN_STATES", "A node's state in a canvas run (data.runState).", NodeRunState),
        ("JOB_OWNED_NODE_FIELDS", "The fields of a node's data that its job writes.", JOB_OWNED_NODE_FIELDS),
    )
    return HEADER + "".join(_constant(name, comment, values) for name, comment, values in constants)


def _constant(name: str, comment: str, values: Iterable[str]) -> str:
    listed = json.dumps([str(value) for value in values])
    return f"\n// {comment}\nexport const {name} = {listed} as const;\n"
