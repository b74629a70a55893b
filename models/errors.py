"""How job failures are named, once, for every adapter, the ingest pipeline and the retry policies.

    ProviderError                    base: something a provider did or said
    ├── ProviderRejected             non-retryable: the same request will fail again
    │     type: ContentPolicyViolation | ProviderAuthError | InvalidProviderRequest | ProviderJobFailed
    │     └── ModelUnavailable       the provider does not know the model (retired or never there)
    └── ProviderUnavailable          retryable: rate limits, 408, 5xx, timeouts, resets (retry_after honoured)
    InvalidJobRequest                the job asks for something the model cannot do; refused before any call
    ModelRetired                     the catalog says the model is shut down; refused before any call
    WebhookRejected                  a callback that fails verification

Activities turn ProviderError into a Temporal ApplicationError (`as_application_error`), which is where the
retry policy sees `non_retryable` and `next_retry_delay`. Standard library only: workflows/policies.py names the
non-retryable types from here.
"""

from __future__ import annotations

from datetime import timedelta

CONTENT_POLICY = "ContentPolicyViolation"
AUTH = "ProviderAuthError"
INVALID_REQUEST = "InvalidProviderRequest"
JOB_FAILED = "ProviderJobFailed"
UNAVAILABLE = "ProviderUnavailable"
BAD_OUTPUT = "InvalidProviderOutput"
MODEL_UNAVAILABLE = "ModelUnavailable"
PROVIDER_TIMEOUT = "ProviderTimeout"  # an asynchronous job the provider did not finish within the polling timeout
# A job whose workflow stopped without ending it (terminated from outside, timed out, deleted): handoff/ends.py.
WORKFLOW_GONE = "WorkflowGone"
# Not a failure: a job whose tenant runs its maxConcurrentJobs already waits (the activity retries until a slot).
TENANT_AT_CAPACITY = "TenantAtCapacity"


class ProviderError(Exception):
    """A provider failed; `type` is the stable name that reaches the run, the node and Temporal."""

    type: str = UNAVAILABLE
    retryable: bool = True

    def __init__(self, message: str, *, type: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if type is not None:
            self.type = type


class ProviderRejected(ProviderError):
    """The provider refused the request for a reason a retry cannot fix."""

    type = INVALID_REQUEST
    retryable = False


# Why a provider was unavailable, as operators count it (imagejobs_provider_errors_total's `class`).
RATE_LIMITED, SERVER_ERROR, TIMEOUT, NETWORK = "rate_limited", "server_error", "timeout", "network"


class ProviderUnavailable(ProviderError):
    """A transient failure; `retry_after` is the provider's own hint, when it gave one; `cause` is one of
    RATE_LIMITED, SERVER_ERROR, TIMEOUT and NETWORK."""

    type = UNAVAILABLE
    retryable = True

    def __init__(self, message: str, *, retry_after: timedelta | None = None, cause: str = SERVER_ERROR) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.cause = cause


def error_class(error: ProviderError) -> str:
    """The failure's class for counting: a transient one's cause, else content_policy, auth or invalid_request."""
    if isinstance(error, ProviderUnavailable):
        return error.cause
    return {CONTENT_POLICY: "content_policy", AUTH: "auth"}.get(error.type, "invalid_request")


class ModelUnavailable(ProviderRejected):
    """The provider answered that it has no such model: a retired id, or one it never served. Retrying cannot
    help; the job must name another model."""

    type = MODEL_UNAVAILABLE

    def __init__(self, provider: str, model: str, said: str) -> None:
        super().__init__(
            f"{provider} has no model {model!r} ({said}). It may have been shut down: choose a model that "
            f"GET /v1/providers lists for {provider}, or map the old id with MODEL_ALIASES."
        )


class ModelRetired(ValueError):
    """The catalog says the model was shut down; the message names the date and the replacement."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidJobRequest(ValueError):
    """The job asks a model for something it cannot do (checked before any provider call)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class WebhookRejected(Exception):
    """A provider callback that failed verification; nothing of it may reach a workflow."""
