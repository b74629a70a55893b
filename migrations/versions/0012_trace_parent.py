"""The W3C traceparent of the request that made a job (`runs.trace_parent`): the record's traceId, and the trace
its workflow's start continues (core/tracing.py).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("trace_parent", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "trace_parent")
