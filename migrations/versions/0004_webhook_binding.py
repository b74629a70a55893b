"""Webhooks bound to their jobs: the provider jobs each submit created, and the deliveries the route refused.

Existing runs' provider job ids are copied into provider_jobs, so their webhooks keep finding their owner.
Their webhook URLs predate the per-attempt token, though: such deliveries are now refused, and those jobs
finish by the polling fallback instead.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provider_jobs",
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("provider_job_id", sa.String(length=256), nullable=False),
        sa.Column("job_id", sa.Text(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("submit_attempt", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("provider", "provider_job_id"),
    )
    op.create_index("ix_provider_jobs_job", "provider_jobs", ["job_id"])
    op.execute(
        "INSERT INTO provider_jobs (provider, provider_job_id, job_id, submit_attempt)"
        " SELECT provider, provider_job_id, id, 1 FROM runs WHERE provider_job_id IS NOT NULL"
        " ON CONFLICT DO NOTHING"
    )
    op.create_table(
        "webhook_refusals",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=256), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_refusals_received", "webhook_refusals", ["received_at"])


def downgrade() -> None:
    op.drop_table("webhook_refusals")
    op.drop_table("provider_jobs")
