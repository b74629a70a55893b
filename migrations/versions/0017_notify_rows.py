"""Notifications carry the row they announce: a job event's kind, payload and time, a node's type, position and
data. A stream sends the carried row as it is and reads the database only for a row too large to carry (a NOTIFY
payload must stay under 8000 bytes; see core/events.py), so a live update costs no query.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# Under PostgreSQL's 8000-byte limit on a NOTIFY payload, with room for the channel's name.
CARRY_LIMIT_BYTES = 7900

# Each trigger function: what its notification always says (`head`), and the row it carries when that fits.
EVENT_HEAD = (
    "'kind', 'event', 'id', NEW.id, 'runId', NEW.run_id, 'canvasId', (SELECT canvas_id FROM runs WHERE id = NEW.run_id)"
)
EVENT_ROW = "'kind', NEW.kind, 'payload', NEW.payload, 'ts', NEW.ts"
NODE_HEAD = "'kind', 'node', 'canvasId', NEW.canvas_id, 'nodeId', NEW.id, 'version', NEW.version"
NODE_ROW = "'type', NEW.node_type, 'position', NEW.position, 'data', NEW.node_data"


def _carrying(function: str, head: str, row: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head jsonb := jsonb_build_object({head});
    whole text := (head || jsonb_build_object('row', jsonb_build_object({row})))::text;
BEGIN
    PERFORM pg_notify('imagejobs', CASE WHEN octet_length(whole) <= {CARRY_LIMIT_BYTES} THEN whole ELSE head::text END);
    RETURN NEW;
END $$;
"""


def _ids_only(function: str, head: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('imagejobs', json_build_object({head})::text);
    RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.execute(_carrying("notify_run_event", EVENT_HEAD, EVENT_ROW))
    op.execute(_carrying("notify_node_update", NODE_HEAD, NODE_ROW))


def downgrade() -> None:
    op.execute(_ids_only("notify_run_event", EVENT_HEAD))
    op.execute(_ids_only("notify_node_update", NODE_HEAD))
