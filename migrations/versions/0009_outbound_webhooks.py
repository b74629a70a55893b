"""Outbound webhooks: the app's endpoints, and each event's delivery to each of them.

`outbound_deliveries` rows are written in the transaction that ends a job or a canvas run (one per enabled
endpoint whose `events` take the event), so an event is never lost between the end and its delivery; the row's
id is the event's `webhook-id` on every attempt.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def timestamp(name: str, *, now: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.func.now() if now else None, nullable=not now
    )


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("events", postgresql.ARRAY(sa.Text()), nullable=True),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("previous_secret", sa.String(length=200), nullable=True),
        timestamp("previous_secret_until"),
        sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        timestamp("disabled_at"),
        timestamp("failing_since"),
        timestamp("created_at", now=True),
        timestamp("updated_at", now=True),
    )
    op.create_table(
        "outbound_deliveries",
        sa.Column("id", sa.String(length=64), primary_key=True),
        sa.Column(
            "endpoint_id", sa.Text(), sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("subject_id", sa.String(length=128), nullable=False),
        timestamp("occurred_at", now=True),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        timestamp("next_attempt_at"),
        timestamp("delivered_at"),
        timestamp("workflow_started_at"),
        timestamp("created_at", now=True),
        sa.UniqueConstraint("endpoint_id", "event_type", "subject_id", name="uq_outbound_deliveries_event"),
    )
    op.create_index(
        "ix_outbound_deliveries_endpoint_created", "outbound_deliveries", ["endpoint_id", "created_at"]
    )
    op.create_index("ix_outbound_deliveries_subject", "outbound_deliveries", ["subject_id"])
    op.create_index(
        "ix_outbound_deliveries_unstarted",
        "outbound_deliveries",
        ["created_at"],
        postgresql_where=sa.text("workflow_started_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("outbound_deliveries")
    op.drop_table("webhook_endpoints")
