"""Canvas runs: a board's image nodes run as one graph workflow, and each node's state in it.

`canvas_run_nodes.content_hash` is what a node's inputs were (settings, provider, model, input image); a later run
whose node has the same hash, and still shows that job's image, generates nothing. A trigger announces every
change of a node's state, so the board's stream sends the run as it goes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


NOTIFY_CANVAS_RUN = """
CREATE OR REPLACE FUNCTION notify_canvas_run_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One function for both tables: a node row names its run as run_id, a run row is the run (id).
    PERFORM pg_notify('imagejobs', json_build_object(
        'kind', 'canvas_run', 'canvasId', NEW.canvas_id,
        'canvasRunId', COALESCE(to_jsonb(NEW) ->> 'run_id', to_jsonb(NEW) ->> 'id'))::text);
    RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "canvas_runs",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("canvas_id", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="running", nullable=False),
        sa.Column("priority", sa.String(length=8), server_default="low", nullable=False),
        sa.Column("forced", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_canvas_runs_canvas_created", "canvas_runs", ["canvas_id", "created_at"])
    op.create_table(
        "canvas_run_nodes",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("node_id", sa.String(length=256), nullable=False),
        sa.Column("canvas_id", sa.String(length=256), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("upstream", sa.String(length=256), nullable=True),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("job_id", sa.String(length=128), nullable=True),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="1", nullable=False),
        sa.PrimaryKeyConstraint("run_id", "node_id"),
        sa.ForeignKeyConstraint(["run_id"], ["canvas_runs.id"], ondelete="CASCADE"),
        sa.CheckConstraint("image_url IS NULL OR image_url !~* '^data:'", name="ck_canvas_run_nodes_url_not_data"),
    )
    op.create_index("ix_canvas_run_nodes_cache", "canvas_run_nodes", ["canvas_id", "node_id", "job_id"])
    op.execute(NOTIFY_CANVAS_RUN)
    op.execute(
        "CREATE TRIGGER canvas_run_nodes_notify AFTER INSERT OR UPDATE ON canvas_run_nodes"
        " FOR EACH ROW EXECUTE FUNCTION notify_canvas_run_update()"
    )
    op.execute(
        "CREATE TRIGGER canvas_runs_notify AFTER UPDATE ON canvas_runs"
        " FOR EACH ROW EXECUTE FUNCTION notify_canvas_run_update()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS canvas_run_nodes_notify ON canvas_run_nodes")
    op.execute("DROP TRIGGER IF EXISTS canvas_runs_notify ON canvas_runs")
    op.execute("DROP FUNCTION IF EXISTS notify_canvas_run_update()")
    op.drop_table("canvas_run_nodes")
    op.drop_table("canvas_runs")
