"""One word per thing on `canvas_run_nodes`: the run a node belongs to is `canvas_run_id` (a bare `run_id` means a
job's run everywhere else), and its place in the run's order is `order` (it was `position`, which on a node means
`{x, y}`). The notify trigger reads the new column name.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def _notify_function(node_column: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION notify_canvas_run_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One function for both tables: a node row names its run as {node_column}, a run row is the run (id).
    PERFORM pg_notify('imagejobs', json_build_object(
        'kind', 'canvas_run', 'canvasId', NEW.canvas_id,
        'canvasRunId', COALESCE(to_jsonb(NEW) ->> '{node_column}', to_jsonb(NEW) ->> 'id'))::text);
    RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.alter_column("canvas_run_nodes", "run_id", new_column_name="canvas_run_id")
    op.alter_column("canvas_run_nodes", "position", new_column_name="order")
    op.execute(_notify_function("canvas_run_id"))


def downgrade() -> None:
    op.execute(_notify_function("run_id"))
    op.alter_column("canvas_run_nodes", "order", new_column_name="position")
    op.alter_column("canvas_run_nodes", "canvas_run_id", new_column_name="run_id")
