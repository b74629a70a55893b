"""Canvas runs go through the handoff, and failed jobs' files are swept.

`canvas_runs.workflow_started_at` is set once the run's workflow is known to exist, as on `runs`: a run without it
is one the API committed and has yet to start, and the workers' sweep starts those an API process left behind.
To start one, the sweep needs the run's plan as the API made it: `canvas_run_nodes.plan` holds each node's (its
job, its upstream node, its cached image). Runs that existed before this revision were started the old way, in the
request, so they count as started.

`runs.files_swept_at` marks a failed or cancelled job whose stored files (partial outputs, thumbnails) the sweep
has deleted; nothing points at them once the job has ended without a result.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
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
    op.add_column("canvas_runs", sa.Column("workflow_started_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE canvas_runs SET workflow_started_at = created_at")
    op.create_index(
        "ix_canvas_runs_unstarted",
        "canvas_runs",
        ["created_at"],
        postgresql_where=sa.text("workflow_started_at IS NULL"),
    )
    op.create_index(
        "ix_canvas_runs_active", "canvas_runs", ["canvas_id"], postgresql_where=sa.text("finished_at IS NULL")
    )
    op.add_column("canvas_run_nodes", sa.Column("plan", sa.dialects.postgresql.JSONB(), nullable=True))
    op.create_check_constraint("ck_canvas_run_nodes_plan_no_image_data", "canvas_run_nodes", no_image_data("plan"))
    op.add_column("runs", sa.Column("files_swept_at", sa.DateTime(timezone=True), nullable=True))
    # Jobs that ended before this revision are not swept: their files were never promised to go.
    op.execute("UPDATE runs SET files_swept_at = now() WHERE status IN ('failed', 'cancelled')")
    op.create_index(
        "ix_runs_unswept",
        "runs",
        ["finished_at"],
        postgresql_where=sa.text("status IN ('failed', 'cancelled') AND files_swept_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_runs_unswept", table_name="runs")
    op.drop_column("runs", "files_swept_at")
    op.drop_constraint("ck_canvas_run_nodes_plan_no_image_data", "canvas_run_nodes")
    op.drop_column("canvas_run_nodes", "plan")
    op.drop_index("ix_canvas_runs_active", table_name="canvas_runs")
    op.drop_index("ix_canvas_runs_unstarted", table_name="canvas_runs")
    op.drop_column("canvas_runs", "workflow_started_at")
