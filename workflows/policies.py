"""Timeouts and retry policies of every activity call, in one place.

Database steps are short and idempotent: they run as local activities (in the worker that runs the
workflow task, no task queue round trip) and retry until a 10-minute budget runs out, so a database restart
pauses jobs instead of failing them. Provider calls cost money and can be refused for good: three
attempts with exponential backoff (the provider's own Retry-After wins through `next_retry_delay`), and the
non-retryable error types fail at once. Heartbeats let a killed worker's provider call move to another worker
within `heartbeat_timeout`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from models.errors import AUTH, BAD_OUTPUT, CONTENT_POLICY, INVALID_REQUEST, JOB_FAILED, MODEL_UNAVAILABLE

NON_RETRYABLE_PROVIDER_ERRORS = [CONTENT_POLICY, AUTH, INVALID_REQUEST, BAD_OUTPUT, JOB_FAILED, MODEL_UNAVAILABLE]

DB_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=15),
    "schedule_to_close_timeout": timedelta(minutes=10),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=10)
    ),
}

# The same budget for a database step run as a local activity. Backoffs up to the threshold are slept in the
# worker; longer ones (not reached with a 10 s maximum interval) would become a durable timer.
DB_LOCAL_STEP: dict[str, Any] = {**DB_STEP, "local_retry_threshold": timedelta(seconds=30)}

# A job waiting in its tenant's line for a running slot (maxConcurrentJobs) is woken when one of the tenant's jobs
# ends or its cap is raised. Without a wake-up (one lost with a worker or an API process) it asks again after the
# first recheck, then after twice as long, up to the longest. Each wait costs a few history events, so the rechecks
# stay sparse, and each is spread by up to a quarter either way: a burst that joined the line together must not ask
# together, each in turn under its tenant's lock.
RUNNING_SLOT_RECHECK = timedelta(seconds=10)
RUNNING_SLOT_RECHECK_LONGEST = timedelta(seconds=60)
RUNNING_SLOT_RECHECK_SPREAD = 0.25

# How jobs started before wake-ups wait for a running slot: each attempt asks once, and the next comes at most 5 s
# later, for as long as it takes: a waiting job is never failed, only cancelled.
RUNNING_SLOT_WAIT: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), backoff_coefficient=1.5, maximum_interval=timedelta(seconds=5)
    ),
}

PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=3,
    non_retryable_error_types=NON_RETRYABLE_PROVIDER_ERRORS,
)

PROVIDER_CALL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(minutes=10),
    "heartbeat_timeout": timedelta(seconds=10),
    "retry_policy": PROVIDER_RETRY,
}

PROVIDER_POLL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": PROVIDER_RETRY,
}

# One outbound webhook attempt: the POST has its own 15 s timeout. A retry here is for our own trouble (the
# database away); the endpoint's failures are answers, recorded, and retried on the delivery's own schedule.
OUTBOUND_ATTEMPT: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=60),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=30)
    ),
    "schedule_to_close_timeout": timedelta(minutes=30),
}

# Cleanup after a cancellation must not be cut short by the same cancellation, and gives up quickly.
CLEANUP_STEP: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_attempts=3),
}

# The same for a provider job whose own job has ended (workflows/provider_cancel.py), with a bound on its wait for a
# worker of that provider: one whose key was taken away since never comes, and nothing else ends that workflow.
PROVIDER_CANCEL_STEP: dict[str, Any] = {**CLEANUP_STEP, "schedule_to_close_timeout": timedelta(minutes=30)}
