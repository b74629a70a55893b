"""Tenants: `tenants` and their hashed `api_keys`; every canvas-keyed table gets a `tenant_id` the database derives
from its canvas key (models/tenancy.py), and webhook endpoints belong to a tenant. The `default` tenant owns every
row that exists already, and is the tenant of API_KEYS.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The same expression as models.tenancy.TENANT_OF_KEY_SQL, written out: a migration must not change when the code does.
_TENANT_OF = "CASE WHEN strpos({column}, ':') > 0 THEN split_part({column}, ':', 1) ELSE 'default' END"
# Table, its canvas key column, and the index its tenant's lists use.
_KEYED = (
    ("runs", "canvas_id", ("tenant_id", "created_at", "id")),
    ("workflow_nodes", "canvas_id", ("tenant_id",)),
    ("canvases", "id", ("tenant_id",)),
    ("canvas_runs", "canvas_id", None),
)


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    default = None if nullable else sa.func.now()
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, server_default=default)


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("starts_per_minute", sa.Integer(), nullable=True),
        sa.Column("max_concurrent_jobs", sa.Integer(), nullable=True),
        sa.Column("budget_usd_per_day", sa.Float(), nullable=True),
        _timestamp("starts_paced_until", nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
    )
    op.execute("INSERT INTO tenants (id, name) VALUES ('default', 'default')")
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("tenant_id", sa.Text(), sa.ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("prefix", sa.String(length=32), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False, unique=True),
        _timestamp("created_at"),
        _timestamp("revoked_at", nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant_id"])
    for table, key_column, index in _KEYED:
        op.add_column(
            table, sa.Column("tenant_id", sa.Text(), sa.Computed(_TENANT_OF.format(column=key_column), persisted=True), nullable=True)
        )
        if index:
            op.create_index(f"ix_{table}_tenant" + ("_created" if len(index) > 1 else ""), table, list(index))
    op.add_column(
        "webhook_endpoints",
        sa.Column("tenant_id", sa.String(length=64), nullable=False, server_default="default"),
    )


def downgrade() -> None:
    op.drop_column("webhook_endpoints", "tenant_id")
    for table, _, _ in reversed(_KEYED):
        op.drop_column(table, "tenant_id")  # its index goes with it
    op.drop_table("api_keys")
    op.drop_table("tenants")
