"""The handoff to Temporal: a run's workflow start and a webhook's signal are committed before they are made.

`runs.workflow_started_at` is set once the run's workflow is known to exist; a run without it is one the API
committed and has yet to start (the workers' sweep starts those it left behind). `pending_signals` holds each
accepted webhook's event until it is signalled to its workflow. Runs that existed before this revision were
started the old way, synchronously; only those still pending are left for the sweep to check.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def no_image_data(column: str) -> str:
    """The CHECK every JSON column has (as models.guards.json_check_sql made it when this revision was written)."""
    return (
        f"{column} IS NULL OR (octet_length({column}::text) <= 65536"
        f" AND {column}::text !~* 'data:[a-z]+/[a-z0-9.+-]+;base64'"
        f" AND {column}::text !~ '([A-Za-z0-9+/]{{250}}){{4}}')"
    )


def upgrade() -> None:
    op.add_column("runs", sa.Column("workflow_started_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE runs SET workflow_started_at = created_at WHERE status <> 'pending'")
    op.create_index(
        "ix_runs_unstarted", "runs", ["created_at"], postgresql_where=sa.text("workflow_started_at IS NULL")
    )
    op.create_table(
        "pending_signals",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Text(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("event", sa.dialects.postgresql.JSONB(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint(no_image_data("event"), name="ck_pending_signals_event_no_image_data"),
    )
    op.create_index("ix_pending_signals_created", "pending_signals", ["created_at"])


def downgrade() -> None:
    op.drop_table("pending_signals")
    op.drop_index("ix_runs_unstarted", table_name="runs")
    op.drop_column("runs", "workflow_started_at")
