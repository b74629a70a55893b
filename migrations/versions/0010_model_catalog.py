"""Model catalog: what each job costs, and the model lists the providers publish.

`runs.estimated_cost_usd` is set when the job is recorded (the catalog price at the effective size and quality,
times n); `runs.cost_usd` when it ends (the provider's own figure where it reports one). Both stay NULL for a
model without a known price. `provider_model_lists` shares discovery between processes: one row per provider,
the ids it listed and when.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("estimated_cost_usd", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("cost_usd", sa.Float(), nullable=True))
    op.create_table(
        "provider_model_lists",
        sa.Column("provider", sa.String(length=64), primary_key=True),
        sa.Column("models", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("listed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("provider_model_lists")
    op.drop_column("runs", "cost_usd")
    op.drop_column("runs", "estimated_cost_usd")
