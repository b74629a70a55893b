"""Initial schema: runs, run_events, workflow_nodes, and the pg_notify triggers that feed live streams.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Live streams (SSE) listen on one channel; payloads stay tiny (ids only), readers fetch the rows.
NOTIFY_FUNCTIONS = """
CREATE OR REPLACE FUNCTION notify_run_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imagejobs', json_build_object(
        'kind', 'event', 'id', NEW.id, 'runId', NEW.run_id,
        'canvasId', (SELECT subject_id FROM runs WHERE id = NEW.run_id))::text);
    RETURN NEW;
END $$;
CREATE OR REPLACE FUNCTION notify_node_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imagejobs', json_build_object(
        'kind', 'node', 'canvasId', NEW.workflow_id, 'nodeId', NEW.id, 'version', NEW.version)::text);
    RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=256), nullable=False),
        sa.Column("node_id", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("processor", sa.String(length=256), nullable=False),
        sa.Column("provider_job_id", sa.String(length=256), nullable=True),
        sa.Column("request", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "payload IS NULL OR (octet_length(payload::text) <= 65536 AND payload::text !~* 'data:[a-z]+/[a-z0-9.+-]+;base64' AND payload::text !~ '([A-Za-z0-9+/]{250}){4}')",
            name="ck_runs_payload_no_image_data",
        ),
        sa.CheckConstraint(
            "request IS NULL OR (octet_length(request::text) <= 65536 AND request::text !~* 'data:[a-z]+/[a-z0-9.+-]+;base64' AND request::text !~ '([A-Za-z0-9+/]{250}){4}')",
            name="ck_runs_request_no_image_data",
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')", name="ck_runs_status"
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_runs_created", "runs", ["created_at", "id"], unique=False)
    op.create_index("ix_runs_status", "runs", ["status"], unique=False)
    op.create_index("ix_runs_subject_kind", "runs", ["subject_id", "kind"], unique=False)
    op.create_table(
        "workflow_nodes",
        sa.Column("workflow_id", sa.String(length=256), nullable=False),
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("node_type", sa.String(length=64), nullable=False),
        sa.Column("node_data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column(
            "position", postgresql.JSONB(astext_type=sa.Text()), server_default='{"x": 0, "y": 0}', nullable=False
        ),
        sa.Column("owner_job_id", sa.String(length=128), nullable=True),
        sa.Column("owner_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "node_data IS NULL OR (octet_length(node_data::text) <= 65536 AND node_data::text !~* 'data:[a-z]+/[a-z0-9.+-]+;base64' AND node_data::text !~ '([A-Za-z0-9+/]{250}){4}')",
            name="ck_workflow_nodes_data_no_image_data",
        ),
        sa.CheckConstraint(
            "position IS NULL OR (octet_length(position::text) <= 65536 AND position::text !~* 'data:[a-z]+/[a-z0-9.+-]+;base64' AND position::text !~ '([A-Za-z0-9+/]{250}){4}')",
            name="ck_workflow_nodes_position_no_image_data",
        ),
        sa.PrimaryKeyConstraint("workflow_id", "id"),
    )
    op.create_index("ix_workflow_nodes_workflow", "workflow_nodes", ["workflow_id"], unique=False)
    op.create_table(
        "run_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("dedupe_key", sa.String(length=256), nullable=True),
        sa.CheckConstraint(
            "payload IS NULL OR (octet_length(payload::text) <= 65536 AND payload::text !~* 'data:[a-z]+/[a-z0-9.+-]+;base64' AND payload::text !~ '([A-Za-z0-9+/]{250}){4}')",
            name="ck_run_events_payload_no_image_data",
        ),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "dedupe_key", name="uq_run_events_dedupe"),
    )
    op.create_index("ix_run_events_run_ts", "run_events", ["run_id", "ts"], unique=False)
    op.execute(NOTIFY_FUNCTIONS)
    op.execute(
        "CREATE TRIGGER run_events_notify AFTER INSERT ON run_events FOR EACH ROW EXECUTE FUNCTION notify_run_event()"
    )
    op.execute(
        "CREATE TRIGGER workflow_nodes_notify AFTER INSERT OR UPDATE ON workflow_nodes"
        " FOR EACH ROW EXECUTE FUNCTION notify_node_update()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS workflow_nodes_notify ON workflow_nodes")
    op.execute("DROP TRIGGER IF EXISTS run_events_notify ON run_events")
    op.execute("DROP FUNCTION IF EXISTS notify_node_update()")
    op.execute("DROP FUNCTION IF EXISTS notify_run_event()")
    op.drop_index("ix_run_events_run_ts", table_name="run_events")
    op.drop_table("run_events")
    op.drop_index("ix_workflow_nodes_workflow", table_name="workflow_nodes")
    op.drop_table("workflow_nodes")
    op.drop_index("ix_runs_subject_kind", table_name="runs")
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_index("ix_runs_created", table_name="runs")
    op.drop_table("runs")
