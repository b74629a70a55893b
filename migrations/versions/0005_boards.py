"""Boards: a canvas' name and viewport, and its edges (React Flow's own object shape, saved as the app edits it).

Every canvas that already has nodes gets a row named after its id. A trigger announces each save of a board,
so open tabs reload it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None



def no_image_data(column: str) -> str:
    """The CHECK every JSON column has (as models.guards.json_check_sql made it when this revision was written)."""
    return (
        f"{column} IS NULL OR (octet_length({column}::text) <= 65536"
        f" AND {column}::text !~* 'data:[a-z]+/[a-z0-9.+-]+;base64'"
        f" AND {column}::text !~ '([A-Za-z0-9+/]{{250}}){{4}}')"
    )


NOTIFY_BOARD = """
CREATE OR REPLACE FUNCTION notify_board_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imagejobs', json_build_object(
        'kind', 'board', 'canvasId', NEW.id, 'version', NEW.version)::text);
    RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.create_table(
        "canvases",
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("viewport", JSONB(), server_default='{"x": 0, "y": 0, "zoom": 1}', nullable=False),
        sa.Column("version", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint(no_image_data("viewport"), name="ck_canvases_viewport_no_image_data"),
    )
    op.create_table(
        "canvas_edges",
        sa.Column("canvas_id", sa.String(length=256), nullable=False),
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=False),
        sa.Column("source_handle", sa.String(length=256), nullable=True),
        sa.Column("target_handle", sa.String(length=256), nullable=True),
        sa.Column("edge_type", sa.String(length=64), nullable=True),
        sa.Column("edge_data", JSONB(), server_default="{}", nullable=False),
        sa.PrimaryKeyConstraint("canvas_id", "id"),
        sa.CheckConstraint(no_image_data("edge_data"), name="ck_canvas_edges_data_no_image_data"),
    )
    op.execute(
        "INSERT INTO canvases (id, name, created_at, updated_at)"
        " SELECT canvas_id, left(canvas_id, 200), min(created_at), max(updated_at) FROM workflow_nodes"
        " GROUP BY canvas_id"
    )
    op.execute(NOTIFY_BOARD)
    op.execute(
        "CREATE TRIGGER canvases_notify AFTER INSERT OR UPDATE ON canvases"
        " FOR EACH ROW EXECUTE FUNCTION notify_board_update()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS canvases_notify ON canvases")
    op.execute("DROP FUNCTION IF EXISTS notify_board_update()")
    op.drop_table("canvas_edges")
    op.drop_table("canvases")
