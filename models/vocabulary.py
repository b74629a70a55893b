"""The words every layer shares: job statuses and event kinds, one enum each.

Standard library only, so workflows can import it (through `imports_passed_through`) and the API can list the
values in OpenAPI. Both are `StrEnum`s: they compare equal to their strings, which is what the database and the
wire carry.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, cast


class JobStatus(StrEnum):
    """Where a job is. The spec's four, plus `cancelled` for a job someone stopped."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class NodeStatus(StrEnum):
    """A canvas node's `data.status`, as the spec's updateReactFlowNode writes it. A job that failed leaves its node
    `error`; one that was cancelled leaves it as it was before the job (store/runs.py)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"


NODE_STATUS_OF_JOB: dict[JobStatus, NodeStatus] = {
    JobStatus.PENDING: NodeStatus.PENDING,
    JobStatus.RUNNING: NodeStatus.RUNNING,
    JobStatus.COMPLETED: NodeStatus.COMPLETED,
    JobStatus.FAILED: NodeStatus.ERROR,
}
# The fields of a node's `data` that its job writes: a save from a canvas never changes them (store/runs.py), and the
# canvas merges them from the stream even while it has unsaved changes of its own (web/src/vocabulary.ts).
JOB_OWNED_NODE_FIELDS = (
    "jobId",
    "startedAt",
    "retry",
    "waitingForSlot",
    "status",
    "progress",
    "error",
    "imageUrl",
    "imageUrls",
    "thumbnailUrl",
    "estimatedCostUsd",
    "costUsd",
    "updatedAt",
    "runId",
    "runState",
    "runReason",
)


class NodeType(StrEnum):
    """A React Flow node's `type` on the reference canvas: a prompt that generates an image, or an uploaded image that
    feeds others. A node saved without a type is an image generation node."""

    IMAGE_GENERATION = "image_generation"
    UPLOADED_IMAGE = "image"


# A node's status that shows its job's end (with those older nodes may still carry).
ENDED_NODE_STATUSES = frozenset({NodeStatus.COMPLETED, NodeStatus.ERROR, "failed", "cancelled"})

# What clients see: the spec's four statuses. A cancelled job reads `failed`, with this error code and sentence.
SpecStatus = Literal["pending", "running", "completed", "failed"]
CANCELLED_ERROR_CODE = "Cancelled"
CANCELLED_ERROR = "The job was cancelled before it finished; retry it to generate the image."


def spec_status(status: str) -> SpecStatus:
    """A job's status as the spec names it (`cancelled` is `failed`)."""
    return "failed" if status == JobStatus.CANCELLED else cast(SpecStatus, str(status))


class EventKind(StrEnum):
    """What an entry of a job's audit trail (`run_events`) records.

    The spec's `progress`, `log` and `error`, plus the lifecycle: `created`, `status` (the job started running),
    `webhook` (a verified provider callback), `completed` and `cancelled`.
    """

    CREATED = "created"
    STATUS = "status"
    PROGRESS = "progress"
    LOG = "log"
    WEBHOOK = "webhook"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"


# A job's stream ends after one of these: they are written once, when the run reaches a terminal status.
TERMINAL_EVENT_KINDS: frozenset[EventKind] = frozenset({EventKind.COMPLETED, EventKind.ERROR, EventKind.CANCELLED})

EVENT_KIND_BY_STATUS: dict[JobStatus, EventKind] = {
    JobStatus.RUNNING: EventKind.STATUS,
    JobStatus.COMPLETED: EventKind.COMPLETED,
    JobStatus.FAILED: EventKind.ERROR,
    JobStatus.CANCELLED: EventKind.CANCELLED,
}


class NodeRunState(StrEnum):
    """Where one node of a canvas run is: a job's statuses, plus `cached` (its inputs had not changed since its
    last completed job, so nothing was generated) and `skipped` (a node upstream of it failed)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    CACHED = "cached"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


FINISHED_NODE_STATES: frozenset[NodeRunState] = frozenset(
    {NodeRunState.COMPLETED, NodeRunState.CACHED, NodeRunState.FAILED, NodeRunState.SKIPPED, NodeRunState.CANCELLED}
)
# States whose image a downstream node can start from.
IMAGE_STATES: frozenset[NodeRunState] = frozenset({NodeRunState.COMPLETED, NodeRunState.CACHED})


class Priority(StrEnum):
    """How soon a job's tasks are taken from a backlogged queue: a person's Generate before batch work."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


# Temporal's priority keys: smaller runs sooner; the server's default range is 1 to 5 and 3 is the default.
PRIORITY_KEYS: dict[Priority, int] = {Priority.HIGH: 1, Priority.NORMAL: 3, Priority.LOW: 5}


class OutboundEvent(StrEnum):
    """What the service tells an app's server through its webhook endpoints (a cancelled job is `job.failed`, with
    errorCode `Cancelled` on its record)."""

    JOB_COMPLETED = "job.completed"
    JOB_FAILED = "job.failed"
    CANVAS_RUN_COMPLETED = "canvas_run.completed"
    CANVAS_RUN_FAILED = "canvas_run.failed"


class DeliveryStatus(StrEnum):
    """Where one outbound event stands at one endpoint: still being tried, taken (2xx), or given up on."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def job_event(status: str) -> OutboundEvent:
    """The outbound event of a job that ended with `status`."""
    return OutboundEvent.JOB_COMPLETED if status == JobStatus.COMPLETED else OutboundEvent.JOB_FAILED


def canvas_run_event(status: str) -> OutboundEvent:
    """The outbound event of a canvas run that ended with `status`."""
    return OutboundEvent.CANVAS_RUN_COMPLETED if status == JobStatus.COMPLETED else OutboundEvent.CANVAS_RUN_FAILED
