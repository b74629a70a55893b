"""The words every layer shares: job statuses and event kinds, one enum each.

Standard library only, so workflows can import it (through `imports_passed_through`) and the API can list the
values in OpenAPI. Both are `StrEnum`s: they compare equal to their strings, which is what the database and the
wire carry.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is. The spec's four, plus `cancelled` for a job someone stopped."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


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
