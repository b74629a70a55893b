"""The spec's contract: canvas naming, provider and model columns, startedAt always set, progress in percent.

- runs.subject_id and workflow_nodes.workflow_id become canvas_id (one word for a board in Python and SQL).
- runs gains provider and model, filled from processor ('provider:model'), which stays.
- runs.started_at is the job's creation time (the spec types startedAt as always present).
- progress was a 0-1 fraction; it is 0-100 now, in run payloads, node data and event payloads.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

NOTIFY_FUNCTIONS = """
CREATE OR REPLACE FUNCTION notify_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imagejobs', json_build_object(
        'kind', 'event', 'id', NEW.id, 'runId', NEW.run_id,
        'canvasId', (SELECT canvas_id FROM runs WHERE id = NEW.run_id))::text);
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION notify_node_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imagejobs', json_build_object(
        'kind', 'node', 'canvasId', NEW.canvas_id, 'nodeId', NEW.id, 'version', NEW.version)::text);
    RETURN NEW;
END $$;
"""

# A 0-1 fraction under `key` of a JSONB column becomes a percent; values above 1 are already percents.
_TO_PERCENT = (
    "UPDATE {table} SET {column} = jsonb_set({column}, '{{progress}}',"
    " to_jsonb(round(({column}->>'progress')::numeric * 100, 1)))"
    " WHERE jsonb_typeof({column}->'progress') = 'number' AND ({column}->>'progress')::numeric <= 1"
)


def upgrade() -> None:
    op.alter_column("runs", "subject_id", new_column_name="canvas_id")
    op.execute("ALTER INDEX ix_runs_subject_kind RENAME TO ix_runs_canvas_kind")
    op.alter_column("workflow_nodes", "workflow_id", new_column_name="canvas_id")
    op.execute("ALTER INDEX ix_workflow_nodes_workflow RENAME TO ix_workflow_nodes_canvas")
    # The triggers name the renamed columns: replace them before any row below is updated.
    op.execute(NOTIFY_FUNCTIONS)
    op.add_column("runs", sa.Column("provider", sa.String(length=64), nullable=True))
    op.add_column("runs", sa.Column("model", sa.String(length=200), nullable=True))
    op.execute("UPDATE runs SET provider = split_part(processor, ':', 1), model = substr(processor, strpos(processor, ':') + 1)")
    op.alter_column("runs", "provider", nullable=False)
    op.alter_column("runs", "model", nullable=False)
    op.execute("UPDATE runs SET started_at = created_at WHERE started_at IS NULL OR started_at > created_at")
    op.alter_column("runs", "started_at", nullable=False, server_default=sa.text("now()"))
    for table, column in (("runs", "payload"), ("workflow_nodes", "node_data"), ("run_events", "payload")):
        op.execute(_TO_PERCENT.format(table=table, column=column))


def downgrade() -> None:
    op.alter_column("runs", "started_at", nullable=True, server_default=None)
    op.drop_column("runs", "model")
    op.drop_column("runs", "provider")
    op.execute("ALTER INDEX ix_workflow_nodes_canvas RENAME TO ix_workflow_nodes_workflow")
    op.alter_column("workflow_nodes", "canvas_id", new_column_name="workflow_id")
    op.execute("ALTER INDEX ix_runs_canvas_kind RENAME TO ix_runs_subject_kind")
    op.alter_column("runs", "canvas_id", new_column_name="subject_id")
    op.execute(NOTIFY_FUNCTIONS.replace("canvas_id FROM runs", "subject_id FROM runs").replace("NEW.canvas_id", "NEW.workflow_id"))
