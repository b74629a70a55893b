"""Tenants own canvases, and through them everything on a canvas: nodes, edges, jobs and canvas runs.

Two tenants may both name a board `canvas-1`. Behind the API a canvas is therefore known by its *canvas key*, the
tenant and the wire's `workflowId` in one string, and every `canvas_id` column and payload field holds that key:

- the `default` tenant's key is the bare `workflowId`, so a single-team deployment (and every row written before
  tenants existed) keeps the ids it has;
- any other tenant's key is `<tenantId>:<workflowId>`. A `workflowId` cannot hold `:` (ID_PATTERN), so no key of
  one tenant can equal a key of another.

The database derives each row's `tenant_id` from its key (a generated column, migration 0016), so lists filter on
it and no write has to remember it. The API turns `workflowId` into a key on the way in (`canvas_key`) and back on
the way out (`workflow_id_of`); the key itself never reaches a client.
"""

from __future__ import annotations

DEFAULT_TENANT = "default"
KEY_SEPARATOR = ":"

# The SQL that derives a row's tenant from its canvas key; the generated columns of migration 0016 use it.
TENANT_OF_KEY_SQL = "CASE WHEN strpos({column}, ':') > 0 THEN split_part({column}, ':', 1) ELSE 'default' END"


def canvas_key(tenant_id: str, workflow_id: str) -> str:
    """The key of tenant `tenant_id`'s canvas `workflow_id`."""
    if tenant_id == DEFAULT_TENANT:
        return workflow_id
    return f"{tenant_id}{KEY_SEPARATOR}{workflow_id}"


def workflow_id_of(key: str) -> str:
    """The canvas' `workflowId` as its tenant knows it."""
    return key.rpartition(KEY_SEPARATOR)[2]


def tenant_of(key: str) -> str:
    """The tenant a canvas key belongs to (what the database's generated `tenant_id` computes)."""
    tenant, separator, _ = key.partition(KEY_SEPARATOR)
    return tenant if separator else DEFAULT_TENANT
