"""Unfinished runs whose workflows are gone: `runs.workflow_checked_at` is when the workers' sweep last asked Temporal
about an unfinished run's workflow. A run whose workflow stopped without ending it (terminated, timed out, deleted)
is ended by the sweep (handoff/ends.py), so no job stays `pending` or `running` for good.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("workflow_checked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_runs_unfinished_check",
        "runs",
        [sa.text("COALESCE(workflow_checked_at, workflow_started_at)")],
        postgresql_where=sa.text("status IN ('pending', 'running') AND workflow_started_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_unfinished_check", table_name="runs")
    op.drop_column("runs", "workflow_checked_at")
