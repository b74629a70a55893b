"""Jobs and canvas runs whose workflows are gone: `workflow_checked_at` (on `runs` and `canvas_runs`) is when the
workers' sweep last asked Temporal about an unfinished one's workflow. One whose workflow stopped without ending
it (terminated, timed out, deleted) is ended by the sweep (handoff/ends.py), so no job stays `pending` or
`running`, and no board keeps a run that never ends, for good.

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
    op.add_column("canvas_runs", sa.Column("workflow_checked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_canvas_runs_unfinished_check",
        "canvas_runs",
        [sa.text("COALESCE(workflow_checked_at, workflow_started_at)")],
        postgresql_where=sa.text("finished_at IS NULL AND workflow_started_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_canvas_runs_unfinished_check", table_name="canvas_runs")
    op.drop_column("canvas_runs", "workflow_checked_at")
    op.drop_index("ix_runs_unfinished_check", table_name="runs")
    op.drop_column("runs", "workflow_checked_at")
