"""Where the nodes that jobs create go (`canvas_slots`): a grid beside a canvas' existing nodes, one cell each, so
nodes made through the API or the CLI no longer pile up at (0, 0).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "canvas_slots",
        sa.Column("canvas_id", sa.String(length=256), primary_key=True),
        sa.Column("next_slot", sa.Integer(), nullable=False),
        sa.Column("base_x", sa.Float(), nullable=False),
        sa.Column("base_y", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("canvas_slots")
