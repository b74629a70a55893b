"""A tenant's line for running slots: `runs.slot_wait_since` marks a job that found its tenant at maxConcurrentJobs
and waits, `pending`, for a slot. A job's end wakes the oldest of its tenant's line (activities/runs.py), so the
next job starts as one ends, in the order they came to wait.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("slot_wait_since", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_runs_slot_line",
        "runs",
        ["tenant_id", "slot_wait_since"],
        postgresql_where=sa.text("status = 'pending' AND slot_wait_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_slot_line", table_name="runs")
    op.drop_column("runs", "slot_wait_since")
