"""Database tables (SQLModel). The Alembic revision in migrations/ creates exactly these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from models.guards import json_check_sql
from models.tenancy import TENANT_OF_KEY_SQL
from models.vocabulary import JobStatus, NodeType

_STATUS_VALUES = ", ".join(f"'{status.value}'" for status in JobStatus)


def _jsonb(**kwargs: Any) -> Any:
    return Field(sa_column=Column(JSONB, **kwargs))


def _tenant_of(key_column: str) -> Any:
    """The row's tenant, derived by the database from its canvas key (models/tenancy.py); never written."""
    return Field(
        default=None, sa_column=Column(Text, Computed(TENANT_OF_KEY_SQL.format(column=key_column), persisted=True))
    )


def _timestamp(*, nullable: bool = False, default_now: bool = True) -> Any:
    return Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=nullable, server_default=func.now() if default_now else None
        ),
    )


class Run(SQLModel, table=True):
    """One image job: its request, its state and its result (URLs and provenance, never bytes).

    `canvas_id` is the spec's `subject_id` (the wire's `workflowId`); `processor` is the spec's `provider:model`,
    kept beside the two columns it is made of.
    """

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_canvas_kind", "canvas_id", "kind"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_created", "created_at", "id"),
        Index("ix_runs_tenant_created", "tenant_id", "created_at", "id"),
        Index("ix_runs_unstarted", "created_at", postgresql_where=text("workflow_started_at IS NULL")),
        Index(
            "ix_runs_slot_line",
            "tenant_id",
            "slot_wait_since",
            postgresql_where=text("status = 'pending' AND slot_wait_since IS NOT NULL"),
        ),
        Index(
            "ix_runs_unfinished_check",
            func.coalesce(text("workflow_checked_at"), text("workflow_started_at")),
            postgresql_where=text("status IN ('pending', 'running') AND workflow_started_at IS NOT NULL"),
        ),
        Index(
            "ix_runs_unswept",
            "finished_at",
            postgresql_where=text("status IN ('failed', 'cancelled') AND files_swept_at IS NULL"),
        ),
        CheckConstraint(json_check_sql("request"), name="ck_runs_request_no_image_data"),
        CheckConstraint(json_check_sql("payload"), name="ck_runs_payload_no_image_data"),
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="ck_runs_status"),
    )

    id: str = Field(primary_key=True, max_length=128)
    kind: str = Field(default="image_gen", max_length=32)
    canvas_id: str = Field(max_length=256)
    node_id: str = Field(max_length=256)
    status: str = Field(default="pending", max_length=16)
    provider: str = Field(max_length=64)
    model: str = Field(max_length=200)
    processor: str = Field(max_length=256)
    provider_job_id: str | None = Field(default=None, max_length=256)
    request: dict[str, Any] = _jsonb(nullable=False)
    payload: dict[str, Any] = _jsonb(nullable=False, server_default="{}")
    error: str | None = Field(default=None, sa_column=Column(Text))
    error_code: str | None = Field(default=None, max_length=64)
    created_at: datetime = _timestamp()
    # The spec's startedAt is always present: the moment the job was created. Running begins at `timings.queued`.
    started_at: datetime = _timestamp()
    finished_at: datetime | None = _timestamp(nullable=True, default_now=False)
    updated_at: datetime = _timestamp()
    # When the run's workflow was known to exist; None while the start the API committed is still to be made.
    workflow_started_at: datetime | None = _timestamp(nullable=True, default_now=False)
    # Since when the job waits, `pending`, for one of its tenant's running slots (maxConcurrentJobs); a job's end
    # wakes the oldest waiting (store/runs.transition).
    slot_wait_since: datetime | None = _timestamp(nullable=True, default_now=False)
    # When the workers' sweep last asked Temporal whether the unfinished run's workflow is still there; one gone
    # without ending the run (terminated, timed out, deleted) has the sweep end it (handoff/ends.py).
    workflow_checked_at: datetime | None = _timestamp(nullable=True, default_now=False)
    # When the sweep deleted the files of a job that ended without a result (handoff/orphan_files.py).
    files_swept_at: datetime | None = _timestamp(nullable=True, default_now=False)
    # USD: the catalog price when recorded; what the provider billed when it ended. NULL: price unknown.
    estimated_cost_usd: float | None = None
    cost_usd: float | None = None
    # How many of its provider calls were answered 429 (GET /v1/stats).
    rate_limited: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # The W3C traceparent of the request that made the job (core/tracing.py); its trace id is the record's traceId.
    trace_parent: str | None = Field(default=None, max_length=64)
    # What the job was made from (planning/canvas_plan.inputs_hash): a canvas run reuses the image of a node whose
    # shown job has the hash the node's inputs have now.
    content_hash: str | None = Field(default=None, max_length=64)
    tenant_id: str | None = _tenant_of("canvas_id")


class ProviderModelList(SQLModel, table=True):
    """The model ids a provider listed when last asked (discovery), shared by every process."""

    __tablename__ = "provider_model_lists"

    provider: str = Field(primary_key=True, max_length=64)
    models: list[str] = Field(sa_column=Column(ARRAY(Text), nullable=False))
    listed_at: datetime = _timestamp()


class RunEvent(SQLModel, table=True):
    """An append-only audit entry of a run; a trigger announces each insert with pg_notify."""

    __tablename__ = "run_events"
    __table_args__ = (
        UniqueConstraint("run_id", "dedupe_key", name="uq_run_events_dedupe"),
        Index("ix_run_events_run_ts", "run_id", "ts"),
        CheckConstraint(json_check_sql("payload"), name="ck_run_events_payload_no_image_data"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    run_id: str = Field(sa_column=Column(Text, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False))
    ts: datetime = _timestamp()
    kind: str = Field(max_length=32)
    payload: dict[str, Any] = _jsonb(nullable=False, server_default="{}")
    dedupe_key: str | None = Field(default=None, max_length=256)


class WorkflowNode(SQLModel, table=True):
    """A React Flow node of a canvas; `owner_job_id` is the newest job allowed to write its result."""

    __tablename__ = "workflow_nodes"
    __table_args__ = (
        Index("ix_workflow_nodes_canvas", "canvas_id"),
        Index("ix_workflow_nodes_tenant", "tenant_id"),
        CheckConstraint(json_check_sql("node_data"), name="ck_workflow_nodes_data_no_image_data"),
        CheckConstraint(json_check_sql("position"), name="ck_workflow_nodes_position_no_image_data"),
    )

    canvas_id: str = Field(primary_key=True, max_length=256)
    id: str = Field(primary_key=True, max_length=256)
    node_type: str = Field(default=NodeType.IMAGE_GENERATION, max_length=64)
    node_data: dict[str, Any] = _jsonb(nullable=False, server_default="{}")
    position: dict[str, Any] = _jsonb(nullable=False, server_default='{"x": 0, "y": 0}')
    owner_job_id: str | None = Field(default=None, max_length=128)
    owner_since: datetime | None = _timestamp(nullable=True, default_now=False)
    version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    tenant_id: str | None = _tenant_of("canvas_id")


class CanvasSlots(SQLModel, table=True):
    """Where the nodes that jobs create on a canvas go (store/runs.py): a grid beside the nodes the canvas had when
    the first such node came, one cell per node in the order they came (`next_slot`)."""

    __tablename__ = "canvas_slots"

    canvas_id: str = Field(primary_key=True, max_length=256)
    next_slot: int = 0
    base_x: float = 0.0
    base_y: float = 0.0


class ProviderPacing(SQLModel, table=True):
    """Per provider, the earliest time its next call may go; store/pacing.py moves it on by one gap per call."""

    __tablename__ = "provider_pacing"

    provider: str = Field(primary_key=True, max_length=64)
    next_slot_at: datetime = _timestamp(default_now=False)


class ProviderJob(SQLModel, table=True):
    """Every job a submit created at a provider, recorded the moment the provider answered.

    A webhook is taken only by the job that owns the provider job it reports on, and a job cancels only the
    provider jobs it created itself (a retried submit can leave one behind).
    """

    __tablename__ = "provider_jobs"
    __table_args__ = (Index("ix_provider_jobs_job", "job_id"),)

    provider: str = Field(primary_key=True, max_length=64)
    provider_job_id: str = Field(primary_key=True, max_length=256)
    job_id: str = Field(sa_column=Column(Text, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False))
    submit_attempt: int = Field(default=1)
    created_at: datetime = _timestamp()


class WebhookRefusal(SQLModel, table=True):
    """A delivery the webhook route refused, kept for operators: which job it named, why, and when."""

    __tablename__ = "webhook_refusals"
    __table_args__ = (Index("ix_webhook_refusals_received", "received_at"),)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    received_at: datetime = _timestamp()
    provider: str = Field(max_length=64)
    job_id: str = Field(max_length=256)
    code: str = Field(max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))


class PendingSignal(SQLModel, table=True):
    """An accepted webhook's event, kept until its workflow has been signalled (handoff/sweep.py)."""

    __tablename__ = "pending_signals"
    __table_args__ = (
        Index("ix_pending_signals_created", "created_at"),
        CheckConstraint(json_check_sql("event"), name="ck_pending_signals_event_no_image_data"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True, autoincrement=True))
    run_id: str = Field(sa_column=Column(Text, ForeignKey("runs.id", ondelete="CASCADE"), nullable=False))
    event: dict[str, Any] = _jsonb(nullable=False)
    created_at: datetime = _timestamp()


class Canvas(SQLModel, table=True):
    """A board: its name and viewport. Its nodes are `workflow_nodes`, its edges `canvas_edges`; `version` moves
    on with every save of the board, and a trigger announces it so open tabs reload what changed."""

    __tablename__ = "canvases"
    __table_args__ = (
        CheckConstraint(json_check_sql("viewport"), name="ck_canvases_viewport_no_image_data"),
        Index("ix_canvases_tenant", "tenant_id"),
    )

    id: str = Field(primary_key=True, max_length=256)
    name: str = Field(max_length=200)
    viewport: dict[str, Any] = _jsonb(nullable=False, server_default='{"x": 0, "y": 0, "zoom": 1}')
    version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()
    tenant_id: str | None = _tenant_of("id")


class CanvasEdge(SQLModel, table=True):
    """A React Flow edge of a board. Between image nodes it means refinement: the target starts from the
    source's image."""

    __tablename__ = "canvas_edges"
    __table_args__ = (CheckConstraint(json_check_sql("edge_data"), name="ck_canvas_edges_data_no_image_data"),)

    canvas_id: str = Field(primary_key=True, max_length=256)
    id: str = Field(primary_key=True, max_length=256)
    source: str = Field(max_length=256)
    target: str = Field(max_length=256)
    source_handle: str | None = Field(default=None, max_length=256)
    target_handle: str | None = Field(default=None, max_length=256)
    edge_type: str | None = Field(default=None, max_length=64)
    edge_data: dict[str, Any] = _jsonb(nullable=False, server_default="{}")


class CanvasRun(SQLModel, table=True):
    """A run of a board's image nodes as one graph workflow (workflow id = `id`); its nodes' states are
    `canvas_run_nodes`."""

    __tablename__ = "canvas_runs"
    __table_args__ = (
        Index("ix_canvas_runs_unstarted", "created_at", postgresql_where=text("workflow_started_at IS NULL")),
        Index("ix_canvas_runs_active", "canvas_id", postgresql_where=text("finished_at IS NULL")),
        Index(
            "ix_canvas_runs_unfinished_check",
            func.coalesce(text("workflow_checked_at"), text("workflow_started_at")),
            postgresql_where=text("finished_at IS NULL AND workflow_started_at IS NOT NULL"),
        ),
    )

    id: str = Field(primary_key=True, max_length=128)
    canvas_id: str = Field(max_length=256)
    status: str = Field(default="running", max_length=16)
    priority: str = Field(default="low", max_length=8)
    forced: bool = False
    created_at: datetime = _timestamp()
    finished_at: datetime | None = _timestamp(nullable=True, default_now=False)
    # When the run's workflow was known to exist; None while the start the API committed is still to be made.
    workflow_started_at: datetime | None = _timestamp(nullable=True, default_now=False)
    # When the workers' sweep last asked Temporal whether the unfinished run's workflow is still there (as on runs).
    workflow_checked_at: datetime | None = _timestamp(nullable=True, default_now=False)
    tenant_id: str | None = _tenant_of("canvas_id")


class CanvasRunNode(SQLModel, table=True):
    """One node's state in a canvas run; `content_hash` is what its inputs were, `order` its place in the run's
    order (upstream before downstream)."""

    __tablename__ = "canvas_run_nodes"
    __table_args__ = (CheckConstraint(json_check_sql("plan"), name="ck_canvas_run_nodes_plan_no_image_data"),)

    canvas_run_id: str = Field(primary_key=True, max_length=128, foreign_key="canvas_runs.id")
    node_id: str = Field(primary_key=True, max_length=256)
    canvas_id: str = Field(max_length=256)
    order: int
    upstream: str | None = Field(default=None, max_length=256)
    state: str = Field(default="pending", max_length=16)
    job_id: str | None = Field(default=None, max_length=128)
    image_url: str | None = Field(default=None, sa_column=Column(Text))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    content_hash: str = Field(max_length=64)
    # The node's RunNodePlan as the API made it, so the sweep can start a run whose API process died first.
    plan: dict[str, Any] | None = _jsonb(nullable=True)
    started_at: datetime | None = _timestamp(nullable=True, default_now=False)
    finished_at: datetime | None = _timestamp(nullable=True, default_now=False)
    version: int = 1


class WebhookEndpoint(SQLModel, table=True):
    """An app server's URL that hears of jobs and canvas runs ending (outbound webhooks, Standard Webhooks signed).

    `events` is null for every event type. After a rotation `previous_secret` still signs beside `secret` until
    `previous_secret_until`. `failing_since` is set at the first failed attempt after a success; an endpoint that
    keeps failing for five days is disabled, saying why in `disabled_reason`."""

    __tablename__ = "webhook_endpoints"

    id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(default="default", max_length=64, sa_column_kwargs={"server_default": "default"})
    url: str = Field(sa_column=Column(Text, nullable=False))
    description: str | None = Field(default=None, max_length=500)
    events: list[str] | None = Field(default=None, sa_column=Column(ARRAY(Text), nullable=True))
    secret: str = Field(max_length=200)
    previous_secret: str | None = Field(default=None, max_length=200)
    previous_secret_until: datetime | None = _timestamp(nullable=True, default_now=False)
    disabled: bool = False
    disabled_reason: str | None = Field(default=None, sa_column=Column(Text))
    disabled_at: datetime | None = _timestamp(nullable=True, default_now=False)
    failing_since: datetime | None = _timestamp(nullable=True, default_now=False)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class OutboundDelivery(SQLModel, table=True):
    """One event for one endpoint; `id` is its `webhook-id`, the same on every attempt. Written in the transaction
    that ends the job or canvas run, and delivered by an OutboundWebhookWorkflow (started once
    `workflow_started_at` is set; the sweep starts the ones a crash left)."""

    __tablename__ = "outbound_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_type", "subject_id", name="uq_outbound_deliveries_event"),
        Index("ix_outbound_deliveries_endpoint_created", "endpoint_id", "created_at"),
        Index("ix_outbound_deliveries_subject", "subject_id"),
        Index("ix_outbound_deliveries_unstarted", "created_at", postgresql_where=text("workflow_started_at IS NULL")),
    )

    id: str = Field(primary_key=True, max_length=64)
    endpoint_id: str = Field(
        sa_column=Column(Text, ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False)
    )
    event_type: str = Field(max_length=32)
    # The job id or the canvas run id the event is about; its record is the body's `data`.
    subject_id: str = Field(max_length=128)
    occurred_at: datetime = _timestamp()
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    next_attempt_at: datetime | None = _timestamp(nullable=True, default_now=False)
    delivered_at: datetime | None = _timestamp(nullable=True, default_now=False)
    workflow_started_at: datetime | None = _timestamp(nullable=True, default_now=False)
    created_at: datetime = _timestamp()


class Tenant(SQLModel, table=True):
    """A customer of the deployment: it owns canvases (and through them jobs and runs), keys and endpoints.

    Limits left NULL take the settings' defaults (TENANT_*). `starts_paced_until` is the start limiter's state: the
    moment the tenant's starts would be used up if it started nothing more (store/tenants.py)."""

    __tablename__ = "tenants"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    starts_per_minute: int | None = None
    max_concurrent_jobs: int | None = None
    budget_usd_per_day: float | None = None
    starts_paced_until: datetime | None = _timestamp(nullable=True, default_now=False)
    created_at: datetime = _timestamp()
    updated_at: datetime = _timestamp()


class ApiKey(SQLModel, table=True):
    """A tenant's API key, stored only as its SHA-256 (keys are 256 random bits, so a fast hash is enough);
    `prefix` is its first characters, to tell keys apart in lists. A revoked key keeps its row."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id"),)

    id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(sa_column=Column(Text, ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False))
    name: str | None = Field(default=None, max_length=200)
    prefix: str = Field(max_length=32)
    key_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _timestamp()
    revoked_at: datetime | None = _timestamp(nullable=True, default_now=False)
