"""What each job was made from (`runs.content_hash`), however it was started, so a canvas run reuses any node whose
shown image came from the same inputs. Jobs made by earlier canvas runs take their run node's hash.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("content_hash", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE runs SET content_hash = node.content_hash FROM canvas_run_nodes AS node WHERE node.job_id = runs.id"
    )


def downgrade() -> None:
    op.drop_column("runs", "content_hash")
